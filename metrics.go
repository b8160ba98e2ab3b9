package sticky

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// tableCollector exports every published table's counters at scrape time.
// It reads the process-wide registry, so one collector serves every config:
// Caddy gives each config a new metrics registry and Provision registers
// this same collector into it.
type tableCollector struct{}

var tableMetrics = tableCollector{}

func tableDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("caddy_sticky_table_"+name, help, []string{"table"}, nil)
}

var (
	descEntries    = tableDesc("entries", "Entries in the stick table.")
	descTombstones = tableDesc("tombstones", "Deletion markers kept so deletes replicate.")
	descCapacity   = tableDesc("size", "Maximum entries (the table's size).")
	descMatches    = prometheus.NewDesc("caddy_sticky_table_matches_total", "Key lookups in the table, by result.", []string{"table", "result"}, nil)
	descStores     = tableDesc("stores_total", "Stores and pins that wrote or refreshed an entry.")
	descEvictions  = tableDesc("evictions_total", "Live entries evicted to make room (least recently used first).")
	descRefused    = tableDesc("refused_total", "New keys refused because a nopurge table was full.")
	descExpired    = tableDesc("expired_total", "Expired entries reclaimed.")
	descApplied    = tableDesc("remote_applied_total", "Changes from peers installed.")
	descStale      = tableDesc("remote_stale_total", "Changes from peers ignored as older than what the table holds.")

	descPeerMembers  = prometheus.NewDesc("caddy_sticky_peers_members", "Live members of the peer group, this node included.", []string{"group"}, nil)
	descPeerUpdates  = prometheus.NewDesc("caddy_sticky_peers_updates_total", "Table changes sent to and received from peers.", []string{"group", "direction"}, nil)
	descPeerMessages = prometheus.NewDesc("caddy_sticky_peers_messages_total", "Replication messages sent and received.", []string{"group", "direction"}, nil)
	descPeerBytes    = prometheus.NewDesc("caddy_sticky_peers_bytes_total", "Replication payload bytes sent and received.", []string{"group", "direction"}, nil)
	descPeerErrors   = prometheus.NewDesc("caddy_sticky_peers_errors_total", "Refused peer messages (decode), changes the table refused (apply), failed sends (send), local changes dropped from a full queue (dropped), versions beyond max_clock_offset (clock), tables of another key type or length (shape), messages from non-members (non_member).", []string{"group", "kind"}, nil)
	descPeerSyncs    = prometheus.NewDesc("caddy_sticky_peers_sync_rounds_total", "Anti-entropy transfers started by this node.", []string{"group"}, nil)
	descPeerRepairs  = prometheus.NewDesc("caddy_sticky_peers_membership_repairs_total", "Push/pulls run to learn a sender that was not a member (gossip missed it).", []string{"group"}, nil)
	descPeerLag      = prometheus.NewDesc("caddy_sticky_peers_lag_seconds", "Moving average of how long a member's changes take to arrive here.", []string{"group", "member"}, nil)
)

// Describe sends the descriptors of every metric.
func (tableCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descEntries, descTombstones, descCapacity, descMatches, descStores, descEvictions, descRefused, descExpired, descApplied, descStale,
		descPeerMembers, descPeerUpdates, descPeerMessages, descPeerBytes, descPeerErrors, descPeerSyncs, descPeerRepairs, descPeerLag} {
		ch <- d
	}
	for _, d := range serverDescs {
		ch <- d
	}
}

// Collect reads each table's counters.
func (tableCollector) Collect(ch chan<- prometheus.Metric) {
	for _, h := range state.tableList() {
		st := h.table.Stats()
		name := h.name
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, name)
		}
		counter := func(d *prometheus.Desc, v uint64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{name}, labels...)...)
		}
		gauge(descEntries, float64(st.Entries))
		gauge(descTombstones, float64(st.Tombstones))
		gauge(descCapacity, float64(h.table.Config().Size))
		counter(descMatches, st.Hits, "hit")
		counter(descMatches, st.Misses, "miss")
		counter(descMatches, st.Expired, "expired")
		counter(descMatches, st.Invalid, "invalid")
		counter(descMatches, st.Empty, "empty")
		counter(descStores, st.Stores)
		counter(descEvictions, st.Evictions)
		counter(descRefused, st.Refused)
		counter(descExpired, st.Reaped)
		counter(descApplied, st.Applied)
		counter(descStale, st.Stale)
	}
	for _, h := range state.groupList() {
		st := h.group.Stats()
		g := h.name
		c := func(d *prometheus.Desc, v uint64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{g}, labels...)...)
		}
		ch <- prometheus.MustNewConstMetric(descPeerMembers, prometheus.GaugeValue, float64(st.Members), g)
		c(descPeerUpdates, st.UpdatesSent, "sent")
		c(descPeerUpdates, st.UpdatesReceived, "received")
		c(descPeerMessages, st.MessagesSent, "sent")
		c(descPeerMessages, st.MessagesReceived, "received")
		c(descPeerBytes, st.BytesSent, "sent")
		c(descPeerBytes, st.BytesReceived, "received")
		c(descPeerErrors, st.DecodeErrors, "decode")
		c(descPeerErrors, st.ApplyErrors, "apply")
		c(descPeerErrors, st.SendErrors, "send")
		c(descPeerErrors, st.Dropped, "dropped")
		c(descPeerErrors, st.ClockRefused, "clock")
		c(descPeerErrors, st.ShapeRefused, "shape")
		c(descPeerErrors, st.NonMembers, "non_member")
		c(descPeerSyncs, st.SyncRounds)
		c(descPeerRepairs, st.MembershipRepairs)
		for _, m := range h.group.Members() {
			ch <- prometheus.MustNewConstMetric(descPeerLag, prometheus.GaugeValue, m.Lag.Seconds(), g, m.Name)
		}
	}
	collectServers(ch) // servers.go
}

func registerTableMetrics(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	if err := reg.Register(tableMetrics); err != nil {
		var already prometheus.AlreadyRegisteredError
		if !errors.As(err, &already) {
			return err
		}
	}
	return nil
}
