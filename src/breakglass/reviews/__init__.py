"""Post-incident access reviews: every ended grant is reviewed within 24 hours.

When a request's access ends, a review opens in the same transaction
(:mod:`.opener`), assigned to someone outside the requester's team. The
reviewer records findings and corrective tasks with owners; each task is
closed separately, and the review closes with its last task. Reviews past
their due time raise an alert once (:mod:`.monitor`); an incident's reviews
roll up into one status.
"""
