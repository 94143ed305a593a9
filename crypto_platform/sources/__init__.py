"""Trade sources behind one interface: synthetic (default), ccxt (live exchanges), replay (files)."""
