package valkey

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// op names a kind of call for metrics.
type op uint8

const (
	opGet op = iota
	opPlace
	opRestick
	opRefresh
	opPin
	opDelete
	opClear
	opScan
	opDrain
	opPing
	opReconcile
	numOps
)

var opNames = [numOps]string{"get", "place", "restick", "refresh", "pin", "delete", "clear", "scan", "drain", "ping", "reconcile"}

// result is how a call ended.
type result uint8

const (
	resultOK       result = iota // the server answered (nil replies included)
	resultError                  // the server answered with an error, or the connection failed
	resultTimeout                // no answer within the timeout
	resultRejected               // not sent: the circuit breaker is open
	numResults
)

var resultNames = [numResults]string{"ok", "error", "timeout", "rejected"}

// Collectors live at package level because Caddy gives every config a new
// registry: each config registers these same collectors into its own, and
// counts carry across reloads.
var (
	storeCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sticky", Name: "store_calls_total",
		Help: "Calls to the shared store, by store, operation and result (ok, error, timeout, rejected: not sent because the circuit breaker was open).",
	}, []string{"store", "op", "result"})
	storeLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "sticky", Name: "store_call_duration_seconds",
		Help:    "Time calls to the shared store took, by store and operation (calls rejected by the breaker excluded).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	}, []string{"store", "op"})
	storeBreaker = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "sticky", Name: "store_breaker_open",
		Help: "1 while the store's circuit breaker is open (calls fail at once and decisions are local), else 0.",
	}, []string{"store"})
	storeMalformed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sticky", Name: "store_malformed_values_total",
		Help: "Values read from the store that did not decode and were treated as absent.",
	}, []string{"store"})
	storeInvalidations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sticky", Name: "store_invalidations_total",
		Help: "Keys the store reported as changed elsewhere whose local copy was dropped.",
	}, []string{"store"})
	storeReconciled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sticky", Name: "store_reconciled_total",
		Help: "Local entries compared with the store after it came back: written (the store lacked them), adopted (the store's server replaced the local one).",
	}, []string{"store", "result"})
	storeDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sticky", Name: "store_background_dropped_total",
		Help: "Background refreshes and refetches dropped because the queue was full.",
	}, []string{"store"})
)

// Collectors returns the store metrics, for a caller that registers them
// itself.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{storeCalls, storeLatency, storeBreaker, storeMalformed, storeInvalidations, storeReconciled, storeDropped}
}

// RegisterMetrics registers the store metrics into reg (a config's
// registry from caddy.Context.GetMetricsRegistry); registering twice is not
// an error. A nil reg does nothing.
func RegisterMetrics(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	for _, c := range Collectors() {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}

// storeMetrics holds one store's series, resolved once so calls do not
// look labels up.
type storeMetrics struct {
	calls         [numOps][numResults]prometheus.Counter
	latency       [numOps]prometheus.Observer
	breaker       prometheus.Gauge
	malformed     prometheus.Counter
	invalidations prometheus.Counter
	written       prometheus.Counter
	adopted       prometheus.Counter
	dropped       prometheus.Counter
}

func newStoreMetrics(store string) *storeMetrics {
	m := &storeMetrics{
		breaker:       storeBreaker.WithLabelValues(store),
		malformed:     storeMalformed.WithLabelValues(store),
		invalidations: storeInvalidations.WithLabelValues(store),
		written:       storeReconciled.WithLabelValues(store, "written"),
		adopted:       storeReconciled.WithLabelValues(store, "adopted"),
		dropped:       storeDropped.WithLabelValues(store),
	}
	for o := range numOps {
		m.latency[o] = storeLatency.WithLabelValues(store, opNames[o])
		for r := range numResults {
			m.calls[o][r] = storeCalls.WithLabelValues(store, opNames[o], resultNames[r])
		}
	}
	return m
}
