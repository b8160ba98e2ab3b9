package selection

import "github.com/prometheus/client_golang/prometheus"

// Collectors returns the package's metric collectors, so tests elsewhere
// (the Grafana dashboard's) can check what the policies export.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{cookieLookups, cookieInserts, tableLookups, cookieUncached}
}
