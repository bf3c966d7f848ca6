"""rgwtls: wildcard Let's Encrypt certificates for a Ceph RADOS Gateway fleet."""

__version__ = "0.1.0"
