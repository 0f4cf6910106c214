"""Results become rows; rows become a rich table, a CSV and a JSON document (one schema)."""
