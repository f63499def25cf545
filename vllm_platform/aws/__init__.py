"""The AWS side of a created cluster: network, EKS, node groups, add-ons, and IAM documents as plain dicts."""
