"""The seed's program metrics: Prometheus counters and histograms, and the report.

:mod:`.prometheus` counts requests, approvals, activations, revocations and
refusals (labelled by zone and environment) as their events commit;
:mod:`.report` computes the seven metrics of the program from stored data for any
window; :mod:`.html` renders that report with charts drawn by matplotlib.
"""
