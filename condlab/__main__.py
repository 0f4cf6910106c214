from condlab.cli import main

main()
