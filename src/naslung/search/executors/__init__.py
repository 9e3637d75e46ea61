"""Executors drive a :class:`~naslung.search.runner.SearchDriver`: ``local`` (sequential) or ``ray``."""
