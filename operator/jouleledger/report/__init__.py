"""``jouleledger report``: the chargeback of a period per team, namespace, workload or node, from Prometheus (or
the operator's ``WorkloadFootprint`` resources), with idle energy on its own line or shared by a chosen policy."""
