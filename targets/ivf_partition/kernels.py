"""ivf-partition kernels: the one file the autoresearch loop may edit.

A faithful numpy port of Lance's IVF partition selection, float32 throughout:
  - lance-index/src/vector/kmeans.rs  kmeans_find_partitions: the distance from the query to every
    centroid (lance-linalg l2_distance_batch -> l2_scalar::<f32, 16>, or dot_distance_batch ->
    1 - dot_scalar::<f32, 16>), then arrow-ord sort_to_indices(dists, None, Some(nprobes)) (a
    select_nth_unstable, then an unstable sort of the first nprobes) and a take of the distances
  - lance/src/io/exec/knn.rs  ANNIvfPartitionExec: for cosine the query is normalised first
    (lance-linalg kernels.rs normalize: x / sqrt(sum of x^2)) and L2 is used on it
Called once per query and index before any partition is searched.
"""

import numpy as np


class IvfKernel:
    def __init__(self, centroids, distance_type):
        self.centroids = centroids
        self.distance_type = distance_type

    def find_partitions(self, query, nprobes):
        if self.distance_type == "cosine":
            query = query / np.sqrt((query * query).sum())
        if self.distance_type == "dot":
            dists = 1.0 - (self.centroids * query).sum(axis=1)
        else:
            diff = query - self.centroids
            dists = (diff * diff).sum(axis=1)
        nlist = dists.size
        n = nlist if nprobes is None else min(nprobes, nlist)
        if n < nlist:
            ids = np.argpartition(dists, n - 1)[:n]
            ids = ids[np.argsort(dists[ids])]
        else:
            ids = np.argsort(dists)
        return ids.astype(np.uint32), dists[ids]
