"""Exact top-k recommendation on executors: users in blocks against an item catalogue, seen items masked.

- ``settings``: ``TopKSettings``, what to score and how, built once on the driver;
- ``catalogue``: the items (ids, vectors, segment popularity) and the worker's cache of them;
- ``exact``: the selection, a fast candidate pass and an exact pass with an error bound that proves
  the lists exact whatever the precision, device or block;
- ``mmr``: diversity re-ranking; ``reasons``: the history item behind each recommendation;
- ``batches``: a batch of users (Arrow or pandas) in, rows of ``schemas.RECOMMENDATIONS`` out.

Import from the modules: importing ``settings`` (the driver does, with the config) loads no torch.
"""
