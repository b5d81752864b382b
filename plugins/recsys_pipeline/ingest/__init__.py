"""Where data enters: each source mapped onto one raw contract, checked, and staged in MySQL."""
