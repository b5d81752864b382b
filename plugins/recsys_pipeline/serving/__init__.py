"""Real-time serving: the champion in memory behind an HTTP API, and the feedback it logs.

``champion`` loads and checks a release; ``hot_swap`` follows the pointer; ``answers``
makes lists (published, in context, related) with reasons; ``sessions`` remembers what
active shoppers just did; ``feedback`` writes served lists and posted events to MySQL;
``api_keys`` guards the API; ``app`` is the FastAPI application and ``server`` runs it.
"""
