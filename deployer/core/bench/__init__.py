"""`deployer bench`: throughput under load, measured against a real endpoint.

Pure: what one request recorded (samples), reading a server-sent event stream (sse), the
figures of one concurrency level (stats), request shapes (shapes), which levels to run and
which is best under a latency target (policy), the sweep over a LoadRunner seam (sweep),
predictions and calibration (predict), and the shareable report (report). The HTTP client is
deployer/adapters/loadgen.py.
"""
