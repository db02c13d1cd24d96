"""Training: manifests, preprocessing into token shards, datasets, k-means, the shared training loop.

The entry points are the recipes in the repository's ``recipes/`` folder (``accelerate launch recipes/...``);
this package holds the library code they share.
"""
