"""Site trees (site -> panels -> circuits -> EVSEs) and their load balancing.

Schema: tenant. The engine (``balancing.engine``, added with the balancing issue) is pure
Python and imports nothing from Django; this app turns rows into its input and back.
"""
