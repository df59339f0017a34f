"""Segments on the driver: the segmenters (KMeans, bisecting KMeans) behind one seam, choosing k, stability,
assignment, portraits, ids kept across runs, and the page segment owners read."""
