package valkey

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vk "github.com/valkey-io/valkey-go"
	"go.uber.org/zap"

	"github.com/caddy-sticky/sticky/sticktable"
)

// ErrUnavailable is returned while the circuit breaker is open or before
// the first connection succeeded: the call was not sent.
var ErrUnavailable = errors.New("valkey: store unavailable (circuit breaker open)")

// drainKeySuffix follows the prefix in the name of the set of drained
// servers. It has no ':' after a table name, so no table key can collide
// with it.
const drainKeySuffix = "_sticky_drain"

// Options are the parts of a Store's setup that are not user
// configuration.
type Options struct {
	// Logger receives one line per breaker state change and reconciliation;
	// nil means no logging.
	Logger *zap.Logger
	// Node names this instance in the values it writes (updated_by in
	// listings). Default: the host name.
	Node string
	// ProbeInterval is how often an open breaker pings the server. Default:
	// max(timeout, 250ms).
	ProbeInterval time.Duration
	// Deferred leaves the connection to Connect, so that a config can be
	// provisioned (and validated) without opening a socket.
	Deferred bool
}

// Store is one shared Valkey/Redis server (or cluster) and the tables
// bound to it. It is safe for concurrent use. Create it with New, bind
// tables with Bind, and Close it when no config uses it any more; it is
// meant to be pooled across config reloads like the tables.
type Store struct {
	name string
	// drainMu serialises drain reloads (see reloadDrain)
	drainMu sync.Mutex
	cfg     Config
	opt     vk.ClientOption
	timeout time.Duration
	probe   time.Duration
	logger  *zap.Logger
	node    string
	m       *storeMetrics
	clock   *sticktable.Clock

	client atomic.Pointer[vk.Client]
	br     breaker

	mu       sync.RWMutex
	tables   map[string]*Table
	drainFns []func([]string)

	// stripes count invalidations per hash of the key, so an install
	// racing with an invalidation of its key can tell and back off.
	seed    maphash.Seed
	stripes [4096]atomic.Uint32

	jobs        chan job
	resync      atomic.Bool // the invalidation feed was interrupted
	reconciling atomic.Bool
	probing     atomic.Bool
	started     atomic.Bool // Connect ran
	closed      atomic.Bool
	stop        chan struct{}
	wg          sync.WaitGroup

	calls atomic.Uint64 // calls sent to the server, for Stats
	inval atomic.Uint64

	// evicted, when set, is called after an invalidation dropped a local
	// copy (benchmarks measure the invalidation delay with it).
	evicted atomic.Pointer[func(table string, k sticktable.Key)]
}

// Stats are counters of one Store, for tests and benchmarks.
type Stats struct {
	// Calls sent to the server (rejected ones excluded), background work
	// included.
	Calls uint64
	// Invalidations received for keys held locally.
	Invalidations uint64
	// BreakerOpen is the breaker's current state.
	BreakerOpen bool
}

// New validates cfg and connects. A server that cannot be reached does not
// fail New: the store starts with its breaker open and connects in the
// background, and until then every table decides locally.
func New(name string, cfg Config, opts Options) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opt, err := cfg.clientOption()
	if err != nil {
		return nil, err
	}
	s := &Store{
		name:    name,
		cfg:     cfg,
		timeout: cfg.timeout(),
		probe:   opts.ProbeInterval,
		logger:  opts.Logger,
		node:    opts.Node,
		m:       newStoreMetrics(name),
		clock:   sticktable.NewClock(nil),
		tables:  map[string]*Table{},
		seed:    maphash.MakeSeed(),
		jobs:    make(chan job, 8192),
		stop:    make(chan struct{}),
	}
	if s.logger == nil {
		s.logger = zap.NewNop()
	}
	if s.node == "" {
		s.node, _ = os.Hostname()
	}
	if s.probe <= 0 {
		s.probe = max(s.timeout, 250*time.Millisecond)
	}
	// Broadcast tracking on the prefix: the server pushes the name of every
	// key under it that someone else changes, without remembering which
	// keys each client read (so a million-key table costs the server no
	// tracking memory). NOLOOP: our own writes are already in our cache.
	// One connection per server node, so each change arrives once.
	opt.ClientTrackingOptions = []string{"BCAST", "PREFIX", cfg.Prefix, "NOLOOP"}
	opt.OnInvalidations = s.onInvalidations
	opt.PipelineMultiplex = -1
	opt.CacheSizeEachConn = 1 << 16 // DoCache is not used; the table is the cache
	opt.DisableRetry = true
	opt.Dialer.Timeout = max(10*s.timeout, time.Second)
	opt.ConnWriteTimeout = max(20*s.timeout, 2*time.Second)
	opt.ClientName = "caddy-sticky"
	s.opt = opt

	s.m.breaker.Set(0)
	for range 4 {
		s.wg.Add(1)
		go s.worker()
	}
	if !opts.Deferred {
		s.Connect()
	}
	return s, nil
}

// Connect opens the connection, once; later calls do nothing. A server
// that cannot be reached leaves the breaker open and a prober connecting
// in the background.
func (s *Store) Connect() {
	if s.closed.Load() || !s.started.CompareAndSwap(false, true) {
		return
	}
	if err := s.connect(); err != nil {
		s.br.trip()
		s.m.breaker.Set(1)
		s.logger.Warn("store unreachable: tables decide locally until it answers",
			zap.String("store", s.name), zap.Error(err))
		s.startProber()
	}
}

func (s *Store) connect() error {
	c, err := vk.NewClient(s.opt)
	if err != nil {
		return err
	}
	if s.closed.Load() {
		c.Close()
		return errors.New("store closed")
	}
	s.client.Store(&c)
	return nil
}

// Name is the store's name in the sticky app.
func (s *Store) Name() string { return s.name }

// Prefix is the prefix of every key the store writes.
func (s *Store) Prefix() string { return s.cfg.Prefix }

// Timeout is the bound on every call.
func (s *Store) Timeout() time.Duration { return s.timeout }

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	return Stats{Calls: s.calls.Load(), Invalidations: s.inval.Load(), BreakerOpen: s.br.isOpen()}
}

// Close stops the background work and the connection. Bound tables keep
// working locally (every call then returns ErrUnavailable).
func (s *Store) Close() {
	if !s.closed.CompareAndSwap(false, true) {
		return
	}
	close(s.stop)
	s.wg.Wait()
	if c := s.client.Swap(nil); c != nil {
		(*c).Close()
	}
}

// call sends one command within the timeout and records the outcome in
// the breaker and the metrics. A nil reply is not an error.
func (s *Store) call(ctx context.Context, o op, fn func(context.Context, vk.Client) vk.ValkeyResult) (vk.ValkeyResult, error) {
	cp := s.client.Load()
	if cp == nil || s.br.isOpen() {
		s.m.calls[o][resultRejected].Inc()
		return vk.ValkeyResult{}, ErrUnavailable
	}
	// A client that went away does not cancel the call: it is bounded by
	// the timeout anyway, and a cancellation must not count as the
	// store failing.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.callTimeout(ctx))
	defer cancel()
	s.calls.Add(1)
	start := time.Now()
	res := fn(ctx, *cp)
	s.m.latency[o].Observe(time.Since(start).Seconds())
	err := res.Error()
	return res, s.record(o, err)
}

// callMulti is call for a pipeline of commands to one key's node.
func (s *Store) callMulti(ctx context.Context, o op, fn func(context.Context, vk.Client) []vk.ValkeyResult) ([]vk.ValkeyResult, error) {
	cp := s.client.Load()
	if cp == nil || s.br.isOpen() {
		s.m.calls[o][resultRejected].Inc()
		return nil, ErrUnavailable
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.callTimeout(ctx))
	defer cancel()
	start := time.Now()
	res := fn(ctx, *cp)
	s.calls.Add(uint64(len(res)))
	s.m.latency[o].Observe(time.Since(start).Seconds())
	var first error
	for _, r := range res {
		if err := r.Error(); err != nil && !vk.IsValkeyNil(err) {
			if _, ok := vk.IsValkeyErr(err); !ok {
				first = err
				break
			}
		}
	}
	return res, s.record(o, first)
}

// backgroundKey marks the context of background work (refreshes,
// refetches, verifications, reconciliation), which no request waits for
// and which may take longer than the request timeout.
type backgroundKey struct{}

func background() context.Context {
	return context.WithValue(context.Background(), backgroundKey{}, true)
}

func (s *Store) callTimeout(ctx context.Context) time.Duration {
	if ctx.Value(backgroundKey{}) != nil {
		return max(10*s.timeout, time.Second)
	}
	return s.timeout
}

// record classifies err; it returns nil for nil replies.
func (s *Store) record(o op, err error) error {
	switch {
	case err == nil || vk.IsValkeyNil(err):
		s.m.calls[o][resultOK].Inc()
		s.br.success()
		s.maybeResync()
		return nil
	}
	if _, ok := vk.IsValkeyErr(err); ok {
		// The server answered (NOPERM, WRONGTYPE...): it is up.
		s.m.calls[o][resultError].Inc()
		s.br.success()
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		s.m.calls[o][resultTimeout].Inc()
	} else {
		s.m.calls[o][resultError].Inc()
	}
	if s.br.failure() {
		s.m.breaker.Set(1)
		s.logger.Warn("store unreachable: tables decide locally until it answers",
			zap.String("store", s.name), zap.Duration("timeout", s.timeout), zap.Error(err))
		s.startProber()
	}
	return err
}

// startProber pings the server while the breaker is open and closes it
// on the first answer.
func (s *Store) startProber() {
	if s.closed.Load() || !s.probing.CompareAndSwap(false, true) {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.probing.Store(false)
		tick := time.NewTicker(s.probe)
		defer tick.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			if s.ping() {
				down := s.br.reset()
				s.m.breaker.Set(0)
				s.logger.Info("store reachable again: reconciling local decisions",
					zap.String("store", s.name), zap.Duration("down_for", down))
				s.resync.Store(true)
				s.maybeResync()
				return
			}
		}
	}()
}

func (s *Store) ping() bool {
	cp := s.client.Load()
	if cp == nil {
		if err := s.connect(); err != nil {
			s.m.calls[opPing][resultError].Inc()
			return false
		}
		cp = s.client.Load()
		if cp == nil {
			return false
		}
	}
	// The probe is background work: it may take longer than a request
	// could, so a reconnection whose handshake (TLS, far away) exceeds
	// the request timeout still brings the store back.
	ctx, cancel := context.WithTimeout(context.Background(), max(10*s.timeout, time.Second))
	defer cancel()
	s.calls.Add(1)
	err := (*cp).Do(ctx, (*cp).B().Ping().Build()).Error()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			s.m.calls[opPing][resultTimeout].Inc()
		} else {
			s.m.calls[opPing][resultError].Inc()
		}
		return false
	}
	s.m.calls[opPing][resultOK].Inc()
	return true
}

// onInvalidations runs on the connection's reader: it must be quick. A nil
// list means the feed was interrupted (connection lost) or the server was
// flushed: every local copy may be stale, so the tables are reconciled.
func (s *Store) onInvalidations(msgs []vk.ValkeyMessage) {
	if msgs == nil {
		s.resync.Store(true)
		if !s.br.isOpen() && s.client.Load() != nil {
			s.enqueue(job{kind: jobResync})
		}
		return
	}
	for i := range msgs {
		key, err := msgs[i].ToString()
		if err != nil {
			continue
		}
		s.invalidate(key)
	}
}

func (s *Store) invalidate(key string) {
	rest, ok := strings.CutPrefix(key, s.cfg.Prefix)
	if !ok {
		return
	}
	if rest == drainKeySuffix {
		s.enqueue(job{kind: jobDrain})
		return
	}
	name, raw, ok := strings.Cut(rest, ":")
	if !ok {
		return
	}
	s.mu.RLock()
	tb := s.tables[name]
	s.mu.RUnlock()
	if tb == nil {
		return
	}
	k, err := tb.t.KeyFromBytes([]byte(raw))
	if err != nil {
		return
	}
	s.stripe(key).Add(1)
	if _, held := tb.t.GetKey(k); !held {
		return
	}
	tb.evict(k)
	s.inval.Add(1)
	s.m.invalidations.Inc()
	if fn := s.evicted.Load(); fn != nil {
		(*fn)(tb.name, k)
	}
	s.enqueue(job{kind: jobRefetch, tb: tb, key: k})
}

func (s *Store) stripe(key string) *atomic.Uint32 {
	return &s.stripes[maphash.String(s.seed, key)%uint64(len(s.stripes))]
}

// Bind is Table followed by Attach.
func (s *Store) Bind(name string, t *sticktable.Table) (*Table, error) {
	tb, err := s.Table(name, t)
	if err != nil {
		return nil, err
	}
	s.Attach(tb)
	return tb, nil
}

// Table returns the binding of t as the store's table name (the table's
// name in the sticky app; it must not contain ':'): the attached one if t
// is attached under that name, else a new one that works at once but
// receives invalidations and reconciliation only once attached. Either
// way the binding takes t's current expire into account. A config
// provisions bindings with Table and attaches them when it commits.
func (s *Store) Table(name string, t *sticktable.Table) (*Table, error) {
	if name == "" || strings.Contains(name, ":") {
		return nil, fmt.Errorf("valkey: table name %q must be non-empty and must not contain ':'", name)
	}
	if t == nil {
		return nil, errors.New("valkey: nil table")
	}
	s.mu.RLock()
	tb := s.tables[name]
	s.mu.RUnlock()
	if tb == nil || tb.t != t {
		tb = &Table{s: s, name: name, t: t, keyPrefix: s.cfg.Prefix + name + ":"}
	}
	tb.expireMs.Store(t.Config().Expire.Milliseconds())
	return tb, nil
}

// Attach makes tb the table that receives the store's invalidations for
// its name, replacing any other (a table whose key type changed).
func (s *Store) Attach(tb *Table) {
	s.mu.Lock()
	s.tables[tb.name] = tb
	s.mu.Unlock()
	tb.expireMs.Store(tb.t.Config().Expire.Milliseconds())
}

// Detach stops invalidations for tb, if it is attached.
func (s *Store) Detach(tb *Table) {
	s.mu.Lock()
	if s.tables[tb.name] == tb {
		delete(s.tables, tb.name)
	}
	s.mu.Unlock()
}

func (s *Store) boundTables() []*Table {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*Table, 0, len(s.tables))
	for _, tb := range s.tables {
		out = append(out, tb)
	}
	return out
}

// Background work: refreshes, refetches after an invalidation, drain
// reloads and reconciliation run on a few workers, never on a request.
type jobKind uint8

const (
	jobRefresh jobKind = iota + 1
	jobRefetch
	jobVerify
	jobDrain
	jobResync
)

type job struct {
	kind   jobKind
	tb     *Table
	key    sticktable.Key
	server string
	from   string // jobVerify of a re-stick: the server moved away from
}

func (s *Store) enqueue(j job) {
	if s.closed.Load() {
		return
	}
	select {
	case s.jobs <- j:
	default:
		s.m.dropped.Inc()
	}
}

func (s *Store) worker() {
	defer s.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		case j := <-s.jobs:
			switch j.kind {
			case jobRefresh:
				j.tb.refresh(j.key, j.server)
			case jobRefetch:
				_, _, _ = j.tb.Lookup(background(), j.key)
			case jobVerify:
				// A write whose answer did not come in time may or may not
				// have landed, and may have lost to another instance's:
				// ask again, with time, and adopt what the store holds.
				if j.from == "" {
					_, _ = j.tb.Place(background(), j.key, j.server)
				} else {
					_, _ = j.tb.Restick(background(), j.key, j.from, j.server)
				}
			case jobDrain:
				s.reloadDrain()
			case jobResync:
				s.maybeResync()
			}
		}
	}
}

// maybeResync starts a reconciliation when the invalidation feed was
// interrupted and the server answers again.
func (s *Store) maybeResync() {
	if !s.resync.Load() || s.br.isOpen() || s.closed.Load() || !s.reconciling.CompareAndSwap(false, true) {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.resyncLoop()
		s.reconciling.Store(false)
		// An interruption reported while this one ran starts another.
		if s.resync.Load() && !s.br.isOpen() {
			s.enqueue(job{kind: jobResync})
		}
	}()
}

func (s *Store) resyncLoop() {
	for s.resync.Swap(false) {
		if !s.resyncOnce() {
			return
		}
	}
}

// resyncOnce reconciles every bound table; false means it gave up until
// the store answers again.
func (s *Store) resyncOnce() bool {
	s.enqueue(job{kind: jobDrain})
	// A connection that died with the server fails the first calls
	// after it returns: retry a few times before leaving it to the
	// next recovery.
	for attempt := 0; ; attempt++ {
		written, adopted, err := s.reconcileAll()
		if err == nil {
			if written+adopted > 0 {
				s.logger.Info("reconciled local tables with the store", zap.String("store", s.name),
					zap.Int("written", written), zap.Int("adopted", adopted))
			}
			return true
		}
		if s.br.isOpen() {
			s.resync.Store(true)
			s.logger.Warn("reconciliation with the store interrupted; retried when it answers again",
				zap.String("store", s.name), zap.Error(err))
			return false
		}
		if attempt == 4 {
			// The store answers but refuses part of it: give up rather
			// than loop; entries it refused stay local.
			s.logger.Warn("reconciliation with the store incomplete", zap.String("store", s.name), zap.Error(err))
			return false
		}
		select {
		case <-s.stop:
			return false
		case <-time.After(s.probe):
		}
	}
}

func (s *Store) reconcileAll() (written, adopted int, err error) {
	for _, tb := range s.boundTables() {
		w, a, err := tb.reconcile()
		written += w
		adopted += a
		if err != nil {
			return written, adopted, fmt.Errorf("table %s: %w", tb.name, err)
		}
	}
	return written, adopted, nil
}

// Resyncing reports whether a reconciliation is pending or running (tests).
func (s *Store) Resyncing() bool { return s.resync.Load() || s.reconciling.Load() }
