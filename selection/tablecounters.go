package selection

import "github.com/prometheus/client_golang/prometheus"

// TableCounters counts a table's lookups by outcome into the metric of the
// HTTP stick_table policy (caddy_sticky_table_lookups_total), for policies
// outside this package: the layer-4 stick_table counts its connections
// there, so one dashboard shows a table whatever proxies through it.
type TableCounters struct{ c *outcomeCounters }

// NewTableCounters registers the lookup metric in reg, the registry of the
// config being provisioned, and returns the counters of table.
func NewTableCounters(reg *prometheus.Registry, table string) (*TableCounters, error) {
	if err := registerCollectors(reg, tableLookups); err != nil {
		return nil, err
	}
	return &TableCounters{c: newOutcomeCounters(tableLookups, table)}, nil
}

// Inc counts one lookup with outcome o, without allocating.
func (t *TableCounters) Inc(o Outcome) { t.c.inc(o) }
