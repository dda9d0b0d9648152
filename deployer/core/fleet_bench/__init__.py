"""`deployer fleet bench`: `deployer bench`'s sweep on every host of a fleet, through an SSH
tunnel to each host's loopback, and the fleet's capacity summed (capacity.py); the use case
over a `FleetLink` seam (flow.py; the real one is deployer/adapters/ssh_tunnel.py). Above both
fleet/ and bench/, which stay independent of each other.
"""
