"""Executors drive a :class:`~naslung.search.driver.SearchDriver`: ``local`` (sequential) or ``ray``."""
