package peers

import (
	"cmp"
	"fmt"
	"log"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-sticky/sticky/internal/hashmix"
	"github.com/caddy-sticky/sticky/sticktable"
	"github.com/caddyserver/caddy/v2"
	"github.com/cespare/xxhash/v2"
	"github.com/hashicorp/memberlist"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

const (
	// packetLimit is the largest live batch: one UDP datagram with room
	// for memberlist's framing and encryption (1 + 12 + 16 bytes) under
	// its 1400-byte UDPBufferSize and a 1500-byte Ethernet MTU.
	packetLimit = 1300
	// syncLimit is the largest anti-entropy message. Each costs a TCP
	// connection (memberlist dials one per reliable send), so they are
	// large, yet far below memberlist's 20 MiB limit on user messages.
	syncLimit = 256 << 10
	// flushAt wakes the sender early when this many changes are queued
	// for a table, so bursts go out in full packets without waiting.
	flushAt = 512
	// maxPending bounds the send queue of one table. Beyond it changes
	// are dropped (and counted): anti-entropy repairs them later, and a
	// slow network must not grow memory without bound.
	maxPending = 1 << 18
	// syncParallel bounds concurrent anti-entropy transfers.
	syncParallel = 4
	// defaultPushPull is the anti-entropy period.
	defaultPushPull = 30 * time.Second
	// defaultFlush is how long a change may wait to be batched.
	defaultFlush = 10 * time.Millisecond
	// reconnectFor is how long a failed member is retried before it is
	// forgotten.
	reconnectFor = 24 * time.Hour
	// followUpDelay is when a node that joined checks the tables that
	// got no transfer against a member again; long enough for the first
	// exchange of a typical table to have finished.
	followUpDelay = 2 * time.Second
	// defaultReconnect is how often members seen failing are dialled
	// again: after a partition heals, membership comes back within
	// about this long.
	defaultReconnect = 2 * time.Second
	// exchangeDelay lets a membership change settle (memberlist's own
	// join push/pull, the other member's view) before the digest
	// exchange it triggers; spreadDelay gathers the anti-entropy
	// transfers of one heal into one round of digests to the others.
	exchangeDelay = 500 * time.Millisecond
	// unaskedDelay is how long the member with the larger name waits for
	// the other's exchange after a join before offering its own digests
	// (unaskedTries times, doubling the wait), see NotifyJoin.
	unaskedDelay = 3 * time.Second
	unaskedTries = 4
	spreadDelay  = 300 * time.Millisecond
	// catchUpQuiet is how long after the last anti-entropy batch a table
	// counts as catching up (see attachment.catchingUp).
	catchUpQuiet = 500 * time.Millisecond
	// maxPeers caps the per-member state this node keeps; members are
	// only added by memberlist's membership events, never by messages.
	maxPeers = 4096
	// warnEvery is the interval of rate-limited warnings.
	warnEvery = 10 * time.Second
)

// options are knobs for tests and benchmarks, not user configuration.
type options struct {
	pushPull    time.Duration                                   // anti-entropy period; 0: defaultPushPull
	flush       time.Duration                                   // batching delay; 0: defaultFlush
	probe       time.Duration                                   // memberlist probe interval; 0: its default
	reclaim     time.Duration                                   // memberlist DeadNodeReclaimTime; 0: 30s
	onApply     func(string, sticktable.Change)                 // called after each change applied here
	joinBackoff time.Duration                                   // first join retry delay; 0: 500ms
	reconnect   time.Duration                                   // dial failed members this often; 0: defaultReconnect
	now         func() time.Time                                // this node's clock for version bounds; nil: time.Now
	wrap        func(memberlist.Transport) memberlist.Transport // fault injection around the transport
	idle        bool                                            // do not join until Join (NewIdleGroup)
	repairJoin  func(addr string) (int, error)                  // membership repair's push/pull; nil: memberlist Join
	unasked     time.Duration                                   // first wait before offering digests unasked; 0: unaskedDelay
}

// Group is one peer group: a memberlist member plus the tables replicated
// through it. It is safe for concurrent use. A Group outlives config
// reloads (the app keeps it in a pool); tables are attached and detached
// as configs come and go.
type Group struct {
	cfg      Config
	joinOnce sync.Once
	// keyring is memberlist's, kept so secrets rotate without a restart
	keyring *memberlist.Keyring
	log     *zap.Logger
	opts    options
	ml      *memberlist.Memberlist
	tr      *transport
	addr    string // advertised host:port

	mu     sync.RWMutex
	tables map[string]*attachment
	peers  map[string]*peerState
	// syncing holds "member\x00table" for anti-entropy transfers in
	// progress.
	syncing map[string]bool

	wake      chan struct{}
	stop      chan struct{}
	wg        sync.WaitGroup
	spawnMu   sync.Mutex // orders spawn's wg.Add before Close's wg.Wait
	closed    bool       // under spawnMu
	closeOnce sync.Once
	syncSem   chan struct{}

	// warned holds "table\x00reason" of one-time warnings already logged.
	warned sync.Map
	// maxOffset is cfg.MaxClockOffset, which a reload may change.
	maxOffset atomic.Int64
	// badWarn rate-limits warnings about refused changes (non-members,
	// clocks too far ahead); badDebug the debug lines about undecodable
	// messages.
	badWarn, badDebug rateLimited
	// repair rate-limits membership repairs (repair.go), repairDebug
	// their debug lines.
	repair      repairState
	repairDebug rateLimited

	st counters
}

type counters struct {
	updatesSent, updatesRecv, updatesApplied atomic.Uint64
	msgsSent, msgsRecv                       atomic.Uint64
	bytesSent, bytesRecv                     atomic.Uint64
	syncRounds, syncEntries                  atomic.Uint64
	dropped, decodeErrors, applyErrors       atomic.Uint64
	unknownTables, refreshSuppressed         atomic.Uint64
	sendErrors, joins, leaves                atomic.Uint64
	clockRefused, shapeRefused, nonMembers   atomic.Uint64
	repairs                                  atomic.Uint64
}

// peerState is what this node knows about another member.
type peerState struct {
	name  string
	addr  string // under Group.mu
	state string // under Group.mu
	// node is our own copy of memberlist's node (which memberlist
	// rewrites in place, under its lock, when a member comes back), to
	// send to; replaced, never modified, under Group.mu.
	node  *memberlist.Node
	since time.Time // when state last changed, under Group.mu

	lastContact              atomic.Int64 // unix nanoseconds
	leaving                  atomic.Bool  // it said it is leaving on purpose
	updatesSent, updatesRecv atomic.Uint64
	bytesSent, bytesRecv     atomic.Uint64
	lag                      atomic.Int64 // nanoseconds, moving average
}

// MemberStatus describes one other member of the group, for the admin API
// (`GET /sticky/peers`) and metrics.
type MemberStatus struct {
	// Name is the member's node name.
	Name string `json:"name"`
	// Address is the member's advertised host:port.
	Address string `json:"address"`
	// State is alive, suspect, dead or left.
	State string `json:"state"`
	// LastContact is when a replication message from the member last
	// arrived (zero if never).
	LastContact time.Time `json:"last_contact"`
	// UpdatesSent and UpdatesReceived count changes sent to and received
	// from the member, live and anti-entropy.
	UpdatesSent     uint64 `json:"updates_sent"`
	UpdatesReceived uint64 `json:"updates_received"`
	// BytesSent and BytesReceived count replication payload bytes, before
	// memberlist's framing and encryption.
	BytesSent     uint64 `json:"bytes_sent"`
	BytesReceived uint64 `json:"bytes_received"`
	// Lag estimates how long the member's live changes take to arrive
	// here: a moving average of arrival time minus the time in the
	// change's version, so it includes any clock offset between the hosts.
	Lag time.Duration `json:"lag"`
}

// Stats are cumulative counters of the group, for metrics.
type Stats struct {
	// Members is the number of live members, this node included.
	Members int
	// UpdatesSent counts changes sent (once per receiving member);
	// UpdatesReceived counts changes received; UpdatesApplied those that
	// changed the local table.
	UpdatesSent, UpdatesReceived, UpdatesApplied uint64
	// MessagesSent and MessagesReceived count replication messages.
	MessagesSent, MessagesReceived uint64
	// BytesSent and BytesReceived count replication payload bytes.
	BytesSent, BytesReceived uint64
	// WireBytesSent and WireBytesReceived count everything this node's
	// sockets carried: memberlist framing, encryption, membership gossip.
	WireBytesSent, WireBytesReceived uint64
	// SyncRounds counts anti-entropy transfers started by this node and
	// SyncEntriesSent the entries they carried.
	SyncRounds, SyncEntriesSent uint64
	// Dropped counts local changes not sent because the queue was full.
	Dropped uint64
	// DecodeErrors counts refused messages; ApplyErrors changes the
	// table refused (full NoPurge table, bad key); UnknownTables changes
	// for tables not attached here.
	DecodeErrors, ApplyErrors, UnknownTables uint64
	// RefreshesSuppressed counts refreshes not sent because one was sent
	// recently for the same key.
	RefreshesSuppressed uint64
	// SendErrors counts failed sends.
	SendErrors uint64
	// Joins and Leaves count membership events seen.
	Joins, Leaves uint64
	// ClockRefused counts changes and clear marks refused because their
	// version was more than max_clock_offset ahead of this node's clock.
	ClockRefused uint64
	// ShapeRefused counts batches and digest tables refused because the
	// sender's table has another key type or length.
	ShapeRefused uint64
	// NonMembers counts messages refused because their sender is not a
	// current member (or a digest named another address than the
	// member's).
	NonMembers uint64
	// MembershipRepairs counts push/pulls this node ran with a member
	// after refusing a message from a non-member, to learn the sender
	// (gossip can miss a member during a burst of joins): at most one
	// per 3 s.
	MembershipRepairs uint64
}

// NewGroup starts a member: it binds the sockets, and if cfg.Join is set,
// keeps trying to join in the background until a member answers.
func NewGroup(cfg Config, logger *zap.Logger) (*Group, error) {
	return newGroup(cfg, logger, options{})
}

func newGroup(cfg Config, logger *zap.Logger, o options) (*Group, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	keys, err := cfg.keys()
	if err != nil {
		return nil, err
	}
	host, port, err := splitHostPort(cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("peers: bind %q: %v", cfg.Bind, err)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	if host, err = resolveIP(host); err != nil {
		return nil, fmt.Errorf("peers: bind %q: %v", cfg.Bind, err)
	}
	logger = logger.With(zap.String("node", cfg.Name))
	stdlog := log.New(&zapWriter{l: logger.Named("memberlist")}, "", 0)
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{host}, BindPort: port, Logger: stdlog,
	})
	if err != nil {
		return nil, fmt.Errorf("peers: bind %q: %v", cfg.Bind, err)
	}
	tr := newTransport(nt)
	var mlTransport memberlist.NodeAwareTransport = tr
	if o.wrap != nil {
		w, ok := o.wrap(tr).(memberlist.NodeAwareTransport)
		if !ok {
			tr.Shutdown()
			return nil, fmt.Errorf("peers: wrapped transport is not node aware")
		}
		mlTransport = w
	}

	g := &Group{
		cfg:     cfg,
		log:     logger,
		opts:    o,
		tr:      tr,
		tables:  map[string]*attachment{},
		peers:   map[string]*peerState{},
		syncing: map[string]bool{},
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		syncSem: make(chan struct{}, syncParallel),
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.Transport = mlTransport
	mc.BindAddr, mc.BindPort = host, port
	if cfg.Advertise != "" {
		ah, ap, err := splitHostPort(cfg.Advertise)
		if err == nil {
			ah, err = resolveIP(ah)
		}
		if err != nil {
			tr.Shutdown()
			return nil, fmt.Errorf("peers: advertise %q: %v", cfg.Advertise, err)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = ah, ap
	}
	kr, err := memberlist.NewKeyring(keys, keys[0])
	if err != nil {
		tr.Shutdown()
		return nil, fmt.Errorf("peers: %v", err)
	}
	mc.Keyring = kr
	g.keyring = kr
	// Refuse anything that is not encrypted with one of our keys.
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	// Our messages are already compact binary; LZW would cost CPU for
	// little.
	mc.EnableCompression = false
	mc.PushPullInterval = defaultPushPull
	if o.pushPull > 0 {
		mc.PushPullInterval = o.pushPull
	}
	if o.probe > 0 {
		mc.ProbeInterval = o.probe
	}
	// Live batches share memberlist's handoff queue with its gossip; a
	// deeper queue absorbs bursts instead of dropping them.
	mc.HandoffQueueDepth = 8192
	// Lets a node that crashed come back under its name from another
	// address (a new container IP) without waiting forever.
	mc.DeadNodeReclaimTime = 30 * time.Second
	if o.reclaim > 0 {
		mc.DeadNodeReclaimTime = o.reclaim
	}
	mc.Delegate = (*delegate)(g)
	mc.Events = (*events)(g)
	mc.Logger = stdlog
	ml, err := memberlist.Create(mc)
	if err != nil {
		tr.Shutdown()
		return nil, fmt.Errorf("peers: %v", err)
	}
	g.ml = ml
	g.addr = ml.LocalNode().Address()
	g.maxOffset.Store(int64(cfg.MaxClockOffset))
	g.wg.Add(1)
	go g.flushLoop()
	if !o.idle {
		g.Join()
	}
	return g, nil
}

// NewIdleGroup is NewGroup without joining: the group holds its sockets
// and answers whoever contacts it, but contacts nobody until Join. A config
// that may still be abandoned opens its sockets this way, so that a port in
// use fails it, and joins only once it runs: the cluster never sees a node
// of a config that did not run.
func NewIdleGroup(cfg Config, logger *zap.Logger) (*Group, error) {
	return newGroup(cfg, logger, options{idle: true})
}

// Join starts contacting the members in the Join list (retrying in the
// background until one answers) and redialling failed members. It does
// something only the first time.
func (g *Group) Join() {
	g.joinOnce.Do(func() {
		if len(g.cfg.Join) > 0 {
			g.wg.Add(1)
			go g.joinLoop()
		}
		g.wg.Add(1)
		reconnect := defaultReconnect
		if g.opts.reconnect > 0 {
			reconnect = g.opts.reconnect
		}
		go g.reconnectLoop(reconnect)
	})
}

// resolveIP returns host if it is an IP address, else its first address.
func resolveIP(host string) (string, error) {
	if net.ParseIP(host) != nil {
		return host, nil
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return "", err
	}
	if len(ips) == 0 {
		return "", fmt.Errorf("no address for %s", host)
	}
	return ips[0].String(), nil
}

// Name returns this node's name in the group.
func (g *Group) Name() string { return g.cfg.Name }

// Addr returns the host:port other members reach this node at.
func (g *Group) Addr() string { return g.addr }

// joinLoop retries joining until a member answers or others join us.
func (g *Group) joinLoop() {
	defer g.wg.Done()
	wait := g.opts.joinBackoff
	if wait <= 0 {
		wait = 500 * time.Millisecond
	}
	for {
		n, err := g.ml.Join(g.cfg.Join)
		if n > 0 {
			g.log.Info("joined peer group", zap.Int("contacted", n))
			for _, a := range g.attachments() {
				if !a.exchanged.Load() {
					g.requestDigests(a)
				}
			}
			g.followUp()
			return
		}
		if g.ml.NumMembers() > 1 {
			return // someone joined us: we are in
		}
		g.log.Debug("join failed, retrying", zap.Error(err), zap.Duration("in", wait))
		select {
		case <-g.stop:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// reconnectLoop periodically re-joins members this node saw fail. After
// a partition each side has declared the other dead, and memberlist
// never contacts dead members again on its own: without this the halves
// would stay apart until a restart. The membership events of the rejoin
// then start digest exchanges between every pair (see NotifyJoin).
func (g *Group) reconnectLoop(every time.Duration) {
	defer g.wg.Done()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-tick.C:
		}
		var addrs []string
		now := time.Now()
		g.mu.Lock()
		for name, p := range g.peers {
			switch {
			case p.state != "dead" || p.addr == "":
			case now.Sub(p.since) > reconnectFor:
				delete(g.peers, name) // gone for good
			default:
				addrs = append(addrs, p.addr)
			}
		}
		g.mu.Unlock()
		if len(addrs) == 0 && g.ml.NumMembers() == 1 {
			// Everyone failed: try the configured seeds again.
			addrs = g.cfg.Join
		}
		if len(addrs) > 0 {
			if n, err := g.ml.Join(addrs); n > 0 {
				g.log.Info("reconnected to failed peers", zap.Int("contacted", n))
			} else {
				g.log.Debug("reconnect failed", zap.Error(err))
			}
		}
	}
}

// Close leaves the group (telling the others, so they do not wait for a
// failure timeout) and shuts the sockets down. Attached tables stop
// replicating but stay usable.
func (g *Group) Close() error {
	var err error
	g.closeOnce.Do(func() {
		g.mu.Lock()
		for _, a := range g.tables {
			a.detach()
		}
		g.mu.Unlock()
		g.spawnMu.Lock()
		g.closed = true
		g.spawnMu.Unlock()
		close(g.stop)
		g.wg.Wait()
		bye := encodeLeave(g.cfg.Name)
		for _, t := range g.targets() {
			g.ml.SendBestEffort(t, bye)
		}
		if e := g.ml.Leave(2 * time.Second); e != nil {
			g.log.Debug("leave", zap.Error(e))
		}
		err = g.ml.Shutdown()
	})
	return err
}

// SetSecrets replaces the group's keys in place, for rotation through a
// config reload: new keys are accepted first, then the primary (the first
// secret) is switched, then keys no longer listed are dropped. The group's
// sockets and membership are untouched. The usual rotation is three
// reloads on every node: add the new key as an extra secret, move it
// first, remove the old one.
func (g *Group) SetSecrets(secrets []string) error {
	c := Config{Secrets: secrets}
	keys, err := c.keys()
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := g.keyring.AddKey(k); err != nil {
			return fmt.Errorf("peers: %v", err)
		}
	}
	if err := g.keyring.UseKey(keys[0]); err != nil {
		return fmt.Errorf("peers: %v", err)
	}
	keep := make(map[string]bool, len(keys))
	for _, k := range keys {
		keep[string(k)] = true
	}
	for _, k := range g.keyring.GetKeys() {
		if !keep[string(k)] {
			if err := g.keyring.RemoveKey(k); err != nil {
				return fmt.Errorf("peers: %v", err)
			}
		}
	}
	g.mu.Lock()
	g.cfg.Secrets = append([]string(nil), secrets...)
	g.mu.Unlock()
	return nil
}

// SetMaxClockOffset changes max_clock_offset in place, for a config reload
// (0 means the default).
func (g *Group) SetMaxClockOffset(d caddy.Duration) {
	if d <= 0 {
		d = caddy.Duration(DefaultMaxClockOffset)
	}
	g.maxOffset.Store(int64(d))
}

// Attach replicates t through the group under tableName, which must be
// the same on every node. It sets the table's node name to the group's.
// Attaching the table already attached under that name only re-installs
// the hooks (a config reload does this); attaching another table replaces
// the old one, which stops replicating. A table replicates through one
// group at a time (its change feed has a single subscriber): attaching it
// elsewhere moves it, and detaching it from the group it left is then
// harmless.
func (g *Group) Attach(tableName string, t *sticktable.Table) {
	g.mu.Lock()
	old := g.tables[tableName]
	if old != nil && old.t == t {
		g.mu.Unlock()
		old.hook()
		return
	}
	a := newAttachment(g, tableName, t)
	g.tables[tableName] = a
	g.mu.Unlock()
	if old != nil {
		old.detach()
	}
	a.hook()
	// Members that joined before this table existed here have not
	// exchanged digests for it: ask them now instead of waiting for the
	// next anti-entropy round.
	g.spawn(func() {
		// A join's push/pull may already have carried the new table's
		// digest; a second exchange would only cost another digest.
		if !a.exchanged.Load() {
			g.requestDigests(a)
		}
	})
}

// followUp runs one more digest exchange a moment after a join, for the
// tables that have received no anti-entropy transfer since. The first
// exchange can miss: a table attached while the join's push/pull was in
// flight, a transfer cut by a peer busy past memberlist's timeouts.
// Without this, such a node would wait for a periodic round (30 s by
// default) to catch up. A table that got a transfer caught up (or is
// catching up); one that needed none costs a digest each way.
func (g *Group) followUp() {
	g.spawn(func() {
		select {
		case <-g.stop:
			return
		case <-time.After(followUpDelay):
		}
		for _, a := range g.attachments() {
			if !a.synced.Load() {
				g.requestDigests(a)
			}
		}
	})
}

// spawn runs fn in a goroutine that Close waits for, unless closed.
func (g *Group) spawn(fn func()) {
	g.spawnMu.Lock()
	defer g.spawnMu.Unlock()
	if g.closed {
		return
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		fn()
	}()
}

// Detach stops replicating the table attached under tableName.
func (g *Group) Detach(tableName string) {
	g.mu.Lock()
	a := g.tables[tableName]
	delete(g.tables, tableName)
	g.mu.Unlock()
	if a != nil {
		a.detach()
	}
}

// Tables returns the names of the attached tables, sorted.
func (g *Group) Tables() []string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	out := make([]string, 0, len(g.tables))
	for n := range g.tables {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func (g *Group) attachment(name string) *attachment {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.tables[name]
}

func (g *Group) attachments() []*attachment {
	g.mu.RLock()
	defer g.mu.RUnlock()
	out := make([]*attachment, 0, len(g.tables))
	for _, a := range g.tables {
		out = append(out, a)
	}
	return out
}

// member returns the state of a current (alive) member, or nil: messages
// are accepted only from members, and never create state, so a peer
// holding the secret cannot grow this node's memory by inventing names.
func (g *Group) member(name string) *peerState {
	g.mu.RLock()
	p := g.peers[name]
	alive := p != nil && p.state == "alive"
	g.mu.RUnlock()
	if !alive {
		return nil
	}
	return p
}

// known returns the state of a member this node has heard of, or nil.
func (g *Group) known(name string) *peerState {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.peers[name]
}

// peerLocked returns the state of a member memberlist reported, creating
// it; at the cap, departed members are forgotten first, and a member that
// still does not fit is not tracked (nil).
func (g *Group) peerLocked(name string) *peerState {
	p := g.peers[name]
	if p != nil {
		return p
	}
	if len(g.peers) >= maxPeers {
		for n, q := range g.peers {
			if q.state == "dead" || q.state == "left" {
				delete(g.peers, n)
			}
		}
		if len(g.peers) >= maxPeers {
			return nil
		}
	}
	p = &peerState{name: name, state: "alive", since: time.Now()}
	g.peers[name] = p
	return p
}

// Members describes the other members this node knows of, sorted by name.
func (g *Group) Members() []MemberStatus {
	g.mu.RLock()
	out := make([]MemberStatus, 0, len(g.peers))
	for _, p := range g.peers {
		if p.name == g.cfg.Name {
			continue
		}
		m := MemberStatus{
			Name: p.name, Address: p.addr, State: p.state,
			UpdatesSent: p.updatesSent.Load(), UpdatesReceived: p.updatesRecv.Load(),
			BytesSent: p.bytesSent.Load(), BytesReceived: p.bytesRecv.Load(),
			Lag: time.Duration(p.lag.Load()),
		}
		if lc := p.lastContact.Load(); lc != 0 {
			m.LastContact = time.Unix(0, lc)
		}
		out = append(out, m)
	}
	g.mu.RUnlock()
	slices.SortFunc(out, func(a, b MemberStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Stats returns the group's counters.
func (g *Group) Stats() Stats {
	s := &g.st
	return Stats{
		Members:     g.ml.NumMembers(),
		UpdatesSent: s.updatesSent.Load(), UpdatesReceived: s.updatesRecv.Load(), UpdatesApplied: s.updatesApplied.Load(),
		MessagesSent: s.msgsSent.Load(), MessagesReceived: s.msgsRecv.Load(),
		BytesSent: s.bytesSent.Load(), BytesReceived: s.bytesRecv.Load(),
		WireBytesSent: g.tr.bytesSent.Load(), WireBytesReceived: g.tr.bytesRecv.Load(),
		SyncRounds: s.syncRounds.Load(), SyncEntriesSent: s.syncEntries.Load(),
		Dropped: s.dropped.Load(), DecodeErrors: s.decodeErrors.Load(), ApplyErrors: s.applyErrors.Load(),
		UnknownTables: s.unknownTables.Load(), RefreshesSuppressed: s.refreshSuppressed.Load(),
		SendErrors: s.sendErrors.Load(), Joins: s.joins.Load(), Leaves: s.leaves.Load(),
		ClockRefused: s.clockRefused.Load(), ShapeRefused: s.shapeRefused.Load(), NonMembers: s.nonMembers.Load(),
		MembershipRepairs: s.repairs.Load(),
	}
}

// targets lists the other live members, from the membership events
// (memberlist's own Members are views of nodes it rewrites concurrently).
func (g *Group) targets() []*memberlist.Node {
	g.mu.RLock()
	defer g.mu.RUnlock()
	out := make([]*memberlist.Node, 0, len(g.peers))
	for name, p := range g.peers {
		if name != g.cfg.Name && p.state == "alive" && p.node != nil {
			out = append(out, p.node)
		}
	}
	return out
}

func (g *Group) flushLoop() {
	defer g.wg.Done()
	every := g.opts.flush
	if every <= 0 {
		every = defaultFlush
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var buf []byte
	for {
		select {
		case <-g.stop:
			g.flush(&buf)
			return
		case <-tick.C:
		case <-g.wake:
		}
		g.flush(&buf)
	}
}

// flush sends every queued change to every live member, one UDP packet
// per batch per member.
func (g *Group) flush(buf *[]byte) {
	var targets []*memberlist.Node
	for _, a := range g.attachments() {
		changes := a.take()
		if len(changes) == 0 {
			continue
		}
		if targets == nil {
			targets = g.targets()
		}
		if len(targets) == 0 {
			// Alone: nobody to tell now; whoever joins later gets the
			// table through the join's digest exchange.
			continue
		}
		enc := a.enc
		send := func() {
			n := enc.count
			*buf = enc.finish((*buf)[:0])
			// A batch holding one change too big for a datagram (a long
			// string key) goes over TCP instead of being lost.
			g.sendAll(targets, *buf, n, len(*buf) > packetLimit)
		}
		for i := range changes {
			if !enc.add(&changes[i]) {
				send()
				enc.add(&changes[i])
			}
		}
		if enc.count > 0 {
			send()
		}
		clear(changes) // drop key and name references
		a.recycle(changes)
	}
}

func (g *Group) sendAll(targets []*memberlist.Node, msg []byte, n int, reliable bool) {
	for _, t := range targets {
		g.sendTo(t, msg, n, reliable)
	}
}

func (g *Group) sendTo(t *memberlist.Node, msg []byte, n int, reliable bool) bool {
	var err error
	if reliable {
		err = g.ml.SendReliable(t, msg)
	} else {
		err = g.ml.SendBestEffort(t, msg)
	}
	if err != nil {
		g.st.sendErrors.Add(1)
		g.log.Debug("send failed", zap.String("to", t.Name), zap.Error(err))
		return false
	}
	g.st.msgsSent.Add(1)
	g.st.bytesSent.Add(uint64(len(msg)))
	g.st.updatesSent.Add(uint64(n))
	if p := g.known(t.Name); p != nil {
		p.bytesSent.Add(uint64(len(msg)))
		p.updatesSent.Add(uint64(n))
	}
	return true
}

// handleMessage dispatches a user message from memberlist.
func (g *Group) handleMessage(msg []byte) {
	if len(msg) == 0 {
		g.refuse("empty message", nil)
		return
	}
	switch msg[0] {
	case msgBatch:
		g.handleBatch(msg)
	case msgLeave:
		name, err := decodeLeave(msg)
		if err != nil {
			g.refuse("leave", err)
			return
		}
		// Only a member this node knows of (no state for invented
		// names); one already declared failed is relabelled, as the
		// leave may arrive after memberlist gave up on it.
		if p := g.known(name); p != nil {
			p.leaving.Store(true)
			g.mu.Lock()
			if p.state == "dead" {
				p.state, p.since = "left", time.Now()
			}
			g.mu.Unlock()
		}
	case msgDigest:
		d, err := decodeDigest(msg)
		if err != nil {
			g.refuse("digest", err)
			return
		}
		g.handleDigest(d)
	default:
		g.refuse("message", fmt.Errorf("unknown type %d", msg[0]))
	}
}

func (g *Group) refuse(what string, err error) {
	g.st.decodeErrors.Add(1)
	g.badDebug.logAt(g.log, zapcore.DebugLevel, "refused bad peer message", zap.String("what", what), zap.Error(err))
}

// warnOnce logs a warning the first time reason occurs for table.
func (g *Group) warnOnce(table, reason string, fields ...zap.Field) {
	if _, seen := g.warned.LoadOrStore(table+"\x00"+reason, true); !seen {
		g.log.Warn(reason, append(fields, zap.String("table", table))...)
	}
}

// now is this node's clock.
func (g *Group) now() time.Time {
	if g.opts.now != nil {
		return g.opts.now()
	}
	return time.Now()
}

// versionLimit is the greatest version accepted from a peer now: more
// than max_clock_offset ahead of this node's clock, a version would drag
// every clock of the group forward (and win every comparison it enters).
func (g *Group) versionLimit(now time.Time) uint64 {
	off := time.Duration(g.maxOffset.Load())
	if off == 0 {
		off = time.Duration(g.cfg.MaxClockOffset) // groups built by hand in tests
	}
	ms := now.Add(off).UnixMilli()
	if ms <= 0 {
		return 0
	}
	if uint64(ms) >= 1<<(64-sticktable.LogicalBits) {
		return ^uint64(0)
	}
	return uint64(ms)<<sticktable.LogicalBits | (1<<sticktable.LogicalBits - 1)
}

func (g *Group) handleBatch(msg []byte) {
	b, err := decodeBatch(msg)
	if err != nil {
		g.refuse("batch", err)
		return
	}
	p := g.member(b.sender())
	if p == nil {
		g.st.nonMembers.Add(1)
		g.badWarn.log(g.log, "refused changes from a node that is not a member", zap.String("sender", b.sender()))
		g.repairMembership(b.sender())
		return
	}
	received := time.Now()
	now := g.now()
	limit := g.versionLimit(now)
	g.st.msgsRecv.Add(1)
	g.st.bytesRecv.Add(uint64(len(msg)))
	g.st.updatesRecv.Add(uint64(len(b.changes)))
	p.lastContact.Store(now.UnixNano())
	p.bytesRecv.Add(uint64(len(msg)))
	p.updatesRecv.Add(uint64(len(b.changes)))
	a := g.attachment(b.table)
	if a == nil {
		g.st.unknownTables.Add(uint64(len(b.changes)))
		return
	}
	if b.shape != a.shape {
		g.st.shapeRefused.Add(1)
		g.warnOnce(b.table, "refused changes for a table of another key type or length (every node must configure the table alike)",
			zap.String("peer", b.sender()), zap.Stringer("theirs", b.shape), zap.Stringer("ours", a.shape))
		return
	}
	if b.flags&flagSync != 0 {
		a.synced.Store(true)
		a.lastSyncRecv.Store(time.Now().UnixNano())
	}
	var lag time.Duration
	lagged := false
	applied := 0
	for i := range b.changes {
		r := &b.changes[i]
		if r.version > limit {
			g.st.clockRefused.Add(1)
			g.badWarn.log(g.log, "refused a change versioned beyond max_clock_offset ahead of this node's clock",
				zap.String("peer", b.sender()), zap.Time("version_time", sticktable.VersionTime(r.version)))
			continue
		}
		c := sticktable.Change{Op: r.op, Version: r.version, Node: b.names[r.node], Origin: r.origin, TTL: r.ttl}
		if c.TTL > 0 {
			// what is left now (a tombstone's 0 means "full retention")
			c.TTL = max(c.TTL-b.age-time.Since(received), 1)
		}
		if r.server >= 0 {
			c.Server = b.names[r.server]
		}
		if r.op != sticktable.OpClear {
			if c.Key, err = a.t.KeyFromBytes(r.key); err != nil {
				g.st.applyErrors.Add(1)
				g.log.Debug("refused key", zap.String("table", b.table), zap.Error(err))
				continue
			}
		}
		ok, err := a.t.Apply(c)
		if err != nil {
			g.st.applyErrors.Add(1)
			g.log.Debug("apply failed", zap.String("table", b.table), zap.Error(err))
			continue
		}
		if ok {
			applied++
			a.generation.Add(1)
			g.st.updatesApplied.Add(1)
			if g.opts.onApply != nil {
				g.opts.onApply(b.table, c)
			}
		}
		if b.flags&flagSync == 0 && r.op != sticktable.OpRefresh {
			// A refresh carries the entry's old version, so only new
			// writes say how long changes take to arrive.
			lag = max(lag, now.Sub(sticktable.VersionTime(r.version)))
			lagged = true
		}
	}
	if applied > 0 && b.flags&flagSync != 0 {
		// What anti-entropy taught this node, the others may lack too
		// (they may not be talking to the node it came from yet).
		g.spread(a)
	}
	if lagged {
		lag = max(lag, 0)
		for {
			old := p.lag.Load()
			n := old + (int64(lag)-old)/8
			if old == 0 {
				n = int64(lag)
			}
			if p.lag.CompareAndSwap(old, n) {
				break
			}
		}
	}
}

// delegate is the Group as memberlist's Delegate, kept off the Group's
// exported method set.
type delegate Group

func (d *delegate) NodeMeta(int) []byte { return nil }

func (d *delegate) NotifyMsg(msg []byte) { (*Group)(d).handleMessage(msg) }

func (d *delegate) GetBroadcasts(int, int) [][]byte { return nil }

func (d *delegate) LocalState(bool) []byte {
	g := (*Group)(d)
	dg := digest{sender: g.cfg.Name, addr: g.addr}
	for _, a := range g.attachments() {
		if a.catchingUp() {
			continue
		}
		dg.tables = append(dg.tables, a.digest(0))
		a.exchanged.Store(true)
	}
	return dg.encode(nil)
}

func (d *delegate) MergeRemoteState(buf []byte, _ bool) {
	g := (*Group)(d)
	dg, err := decodeDigest(buf)
	if err != nil {
		g.refuse("push/pull state", err)
		return
	}
	g.handleDigest(dg)
}

// events is the Group as memberlist's EventDelegate.
type events Group

func (e *events) NotifyJoin(n *memberlist.Node) {
	g := (*Group)(e)
	g.st.joins.Add(1)
	g.setPeer(n, "alive")
	if n.Name == g.cfg.Name {
		return
	}
	if p := g.known(n.Name); p != nil {
		p.leaving.Store(false)
	}
	g.log.Info("peer joined", zap.String("peer", n.Name), zap.String("addr", n.Address()))
	// A join, a rejoin after a partition or a restart: this pair may
	// differ, whichever node the join went through. The member with the
	// smaller name asks (both see the event), so each pair exchanges once.
	if g.cfg.Name < n.Name {
		name := n.Name
		g.spawn(func() {
			select {
			case <-g.stop:
				return
			case <-time.After(exchangeDelay):
			}
			g.exchangeWith(name, g.attachments())
		})
		return
	}
	// The other member asks. If nothing comes from it, it may not know
	// of this node at all (gossip can miss a member in a burst of joins),
	// and an idle fleet would give it nothing to refuse until memberlist's
	// periodic push/pull: offer it our digests, which it refuses and then
	// repairs its membership (repair.go). A few tries, further apart, in
	// case the first is lost.
	name, joined := n.Name, g.now().UnixNano()
	g.spawn(func() {
		wait := cmp.Or(g.opts.unasked, unaskedDelay)
		for range unaskedTries {
			select {
			case <-g.stop:
				return
			case <-time.After(wait):
			}
			p := g.member(name)
			if p == nil || p.lastContact.Load() >= joined {
				return
			}
			g.exchangeWith(name, g.attachments())
			wait *= 2
		}
	})
}

func (e *events) NotifyLeave(n *memberlist.Node) {
	g := (*Group)(e)
	g.st.leaves.Add(1)
	// memberlist knows a graceful leave from a failure but does not say
	// which in this callback; the departing node's msgLeave does.
	state := "dead"
	if p := g.known(n.Name); n.State == memberlist.StateLeft || (p != nil && p.leaving.Swap(false)) {
		state = "left"
	}
	g.setPeer(n, state)
	g.log.Info("peer gone", zap.String("peer", n.Name), zap.String("state", state))
}

func (e *events) NotifyUpdate(n *memberlist.Node) {
	(*Group)(e).setPeer(n, "alive")
}

func (g *Group) setPeer(n *memberlist.Node, state string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.peerLocked(n.Name)
	if p == nil {
		return
	}
	p.addr = net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	p.node = &memberlist.Node{Name: n.Name, Addr: append(net.IP(nil), n.Addr...), Port: n.Port, State: n.State}
	if p.state != state {
		p.state, p.since = state, time.Now()
	}
}

// zapWriter routes memberlist's log lines to zap: errors and warnings
// (a peer unreachable, a packet that failed to decrypt) at warn and info,
// the rest at debug. Warnings are rate-limited: junk sent to the peer port
// makes memberlist log one line per packet.
type zapWriter struct {
	l          *zap.Logger
	warn, info rateLimited
}

func (w *zapWriter) Write(p []byte) (int, error) {
	s := strings.TrimSpace(string(p))
	switch {
	case strings.Contains(s, "[ERR]"):
		w.warn.logAt(w.l, zapcore.WarnLevel, s)
	case strings.Contains(s, "[WARN]"):
		w.info.logAt(w.l, zapcore.InfoLevel, s)
	default:
		w.l.Debug(s)
	}
	return len(p), nil
}

// rateLimited logs at most one line per warnEvery; the next line that is
// logged says how many were suppressed in between.
type rateLimited struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (r *rateLimited) log(l *zap.Logger, msg string, fields ...zap.Field) {
	r.logAt(l, zapcore.WarnLevel, msg, fields...)
}

func (r *rateLimited) logAt(l *zap.Logger, lvl zapcore.Level, msg string, fields ...zap.Field) {
	now := time.Now()
	r.mu.Lock()
	if !r.last.IsZero() && now.Sub(r.last) < warnEvery {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	n := r.suppressed
	r.last, r.suppressed = now, 0
	r.mu.Unlock()
	if ce := l.Check(lvl, msg); ce != nil {
		if n > 0 {
			fields = append(fields, zap.Int("suppressed_since_last", n))
		}
		ce.Write(fields...)
	}
}

// entryHash is an entry's contribution to its bucket's sum. Summing
// makes the digest independent of walk order; mixing the key hash, the
// version and the node makes two tables' sums equal only when they hold
// the same writes.
func entryHash(keyHash uint64, c *sticktable.Change) uint64 {
	h := keyHash ^ hashmix.Fmix64(c.Version^xxhash.Sum64String(c.Node)^uint64(c.Origin)<<1)
	if c.Op == sticktable.OpDelete {
		h ^= 0x9e3779b97f4a7c15
	}
	return hashmix.Fmix64(h)
}

// Secrets returns the keys the group runs with now, as configured (the
// first one sends).
func (g *Group) Secrets() []string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return slices.Clone(g.cfg.Secrets)
}
