"""Place recognition around NetVLAD: place databases (database.py), where places come from
(sources.py), descriptor extraction and database building (build.py), revisit detection for
loop closure (online.py)."""
