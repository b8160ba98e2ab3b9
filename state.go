package sticky

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/caddy-sticky/sticky/internal/drain"
	"github.com/caddy-sticky/sticky/peers"
	"github.com/caddy-sticky/sticky/selection"
	"github.com/caddy-sticky/sticky/sticktable"
	"github.com/caddy-sticky/sticky/store/valkey"
)

// state owns everything that outlives a config: the stick tables, the peer
// groups, the drained servers (and the table that persists and replicates
// them), and what the admin API and the metrics read (the tables, groups
// and cookie policies of the running config). It is the only process-wide
// state of the plugin.
//
// A config changes it in two steps, because Caddy runs a new config before
// it stops the old one and may still abandon the new one:
//
//   - plan (the app's Provision) validates the new config against what
//     runs and takes references to the tables and groups it keeps. New
//     tables are created but nobody running sees them; new peer groups
//     open their sockets only at the app's Start (where a port in use
//     fails the config, as a listener does) and join their cluster only at
//     commit. Nothing the running config uses changes: no size, expiry,
//     nopurge, secret, attachment or drain change, no snapshot read into a
//     live table, and Provision alone (caddy validate) opens nothing.
//   - commit applies the plan once the whole new config runs. Caddy tells
//     its apps through lifecycle events (see lifecycle.go): with no config
//     running, the plan commits when its config has started (every app's
//     Start succeeded); in a reload, when Caddy begins stopping the old
//     config, which it does only after the new config replaced it, before
//     any old app stops. A config that fails anywhere (a module's
//     Provision, any app's Start, before or after ours, Caddy's last setup
//     steps) is stopped or cleaned up without ever being committed, and its
//     references are dropped: the running config's state is exactly as it
//     was.
//
// When the running config stops with no new one to commit, the process
// stops its sticky state: nothing is published any more, and the snapshot
// is written when the config is cleaned up, after all its apps stopped, so
// it holds the last users its servers placed.
var state = newStateOwner()

type stateOwner struct {
	mu      sync.Mutex
	tables  map[string]*tableHandle // by poolKey
	groups  map[string]*groupHandle // by groupKey
	stores  map[string]*storeHandle // by name and resolved config
	plans   []*plan                 // provisioned and not yet released
	running *plan                   // the committed plan, nil when none runs

	drained *drain.Set
	// drainTable holds the drained servers with versions, so drains
	// replicate and persist like table entries; created with the first
	// plan that persists or replicates.
	drainTable *sticktable.Table
	drainSync  *drainSync

	// view is what readers see: the running plan's tables, groups and
	// cookie policies, swapped whole at commit so readers never lock.
	view atomic.Pointer[stateView]
}

type stateView struct {
	tables  []*tableHandle // sorted by name
	byName  map[string]*tableHandle
	peers   map[string]string // table name -> its peer group
	groups  []*groupHandle    // sorted by name
	cookies []*selection.StickyCookie
	// tablePolicies are the running config's stick_table policies
	tablePolicies []*selection.StickTable
	// backings are the store bindings of store-backed tables, by name
	backings map[string]*valkey.Table
	// drainStore shares drain state, when the config has a store (the
	// first by name)
	drainStore *valkey.Store
}

func newStateOwner() *stateOwner {
	s := &stateOwner{
		tables:  map[string]*tableHandle{},
		groups:  map[string]*groupHandle{},
		stores:  map[string]*storeHandle{},
		drained: drain.New(),
	}
	s.view.Store(&stateView{byName: map[string]*tableHandle{}})
	return s
}

// planPhase is where a plan is in its life.
type planPhase int

const (
	planProvisioned planPhase = iota
	planStarted               // its config's Start ran; waiting to be committed
	planCommitted             // it is the running config
	planRetired               // a newer plan was committed, or its config stopped
	planAborted               // its config was stopped before it was committed
)

// plan is one config's view of the state: what it uses and how it wants
// it configured.
type plan struct {
	logger *zap.Logger
	phase  planPhase
	// events: Caddy will tell this plan when its config has started and
	// when it begins to stop (lifecycle.go); without them (a context with
	// no events app), Start and Stop stand in.
	events bool
	// stopping: its config began to stop; fullStop: it was the running
	// config and no new one replaced it, so its Cleanup writes the snapshot
	stopping, fullStop bool
	tables             map[string]*tableUse
	groups             map[string]*groupUse
	stores             map[string]*storeUse
	cookies            []*selection.StickyCookie
	tablePolicies      []*selection.StickTable
	persist            snapshotStore
	// snap is the snapshot read when the plan was made with no config
	// running; it restores new tables then, and the drain state at commit.
	snap *snapshotFile
}

// tableUse is a table as one config wants it.
type tableUse struct {
	h       *tableHandle
	cfg     sticktable.Config // size, expire and nopurge to apply at commit
	peers   string
	created bool // made by this plan; nobody else used it before
}

// groupUse is a peer group as one config wants it.
type groupUse struct {
	h   *groupHandle
	cfg peers.Config
}

// tableHandle is a table and how many plans reference it.
type tableHandle struct {
	key   string // its key in stateOwner.tables
	name  string
	table *sticktable.Table
	refs  int
	// published: a running config used it, so dropping it loses entries
	published bool
}

// groupHandle is a peer group and how many plans reference it. cfg is what
// the group runs with now (its secrets change at commit). group is nil
// until the first plan using it starts.
type groupHandle struct {
	key   string
	name  string
	cfg   peers.Config
	group *peers.Group
	refs  int
}

// poolKey includes what a table cannot change in place: its key type and
// length. Changing those gives a new, empty table.
func poolKey(name string, cfg sticktable.Config) string {
	n := cfg.Len
	if cfg.Type.HasLen() && n == 0 {
		n = sticktable.DefaultLen
	}
	if !cfg.Type.HasLen() {
		n = 0
	}
	return fmt.Sprintf("%s\x00%s\x00%d", name, cfg.Type, n)
}

// groupKey is a group's name and sockets. A reload that keeps them keeps
// the group (secrets change in place; join only matters when a node
// starts); one that moves the group to another bind address starts a new
// group, and the old one leaves when the old config is cleaned up.
func groupKey(name string, cfg *peers.Config) string {
	return strings.Join([]string{name, cfg.Bind}, "\x00")
}

// reservedPrefix starts the names of internal tables, such as the one
// that replicates drain state.
const reservedPrefix = "_sticky_"

// plan validates app's config against the running state and takes the
// references it needs. On error nothing is kept.
func (s *stateOwner) plan(app *App, logger *zap.Logger, persist snapshotStore) (_ *plan, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := &plan{logger: logger, tables: map[string]*tableUse{}, groups: map[string]*groupUse{}, stores: map[string]*storeUse{}, persist: persist}
	defer func() {
		if err != nil {
			s.releaseLocked(p)
		}
	}()
	if persist != nil && s.running == nil {
		f, err := persist.load()
		if err != nil {
			logger.Error("reading sticky snapshot; starting with empty tables", zap.Error(err))
		}
		p.snap = f
	}
	if err := s.planGroups(p, app); err != nil {
		return nil, err
	}
	if err := s.planStoresLocked(p, app, logger); err != nil {
		return nil, err
	}
	if err := s.planTables(p, app); err != nil {
		return nil, err
	}
	s.plans = append(s.plans, p)
	return p, nil
}

func (s *stateOwner) planTables(p *plan, app *App) error {
	for _, name := range sortedKeys(app.Tables) {
		if strings.HasPrefix(name, reservedPrefix) {
			return fmt.Errorf("table %s: names starting with %q are reserved for caddy-sticky's own tables", name, reservedPrefix)
		}
		tc := app.Tables[name]
		if tc == nil {
			tc = new(TableConfig)
		}
		cfg, err := tc.tableConfig()
		if err != nil {
			return fmt.Errorf("table %s: %v", name, err)
		}
		if tc.Peers != "" {
			if _, ok := p.groups[tc.Peers]; !ok {
				return fmt.Errorf("table %s: no peer group named %q (add `peers %s { ... }` to the sticky option)", name, tc.Peers, tc.Peers)
			}
		}
		key := poolKey(name, cfg)
		use := &tableUse{cfg: cfg, peers: tc.Peers}
		if h := s.tables[key]; h != nil {
			if err := h.table.CheckReconfigure(cfg.Size, cfg.Expire); err != nil {
				return fmt.Errorf("table %s: %v", name, err)
			}
			use.h = h
		} else {
			t, err := sticktable.New(cfg)
			if err != nil {
				return fmt.Errorf("table %s: %v", name, err)
			}
			use.h = &tableHandle{key: key, name: name, table: t}
			use.created = true
			s.tables[key] = use.h
			if p.snap != nil {
				// Only with no config running: a table that a reload
				// re-creates must not come back with older entries.
				if n, err := restoreTable(p.snap, name, t); err != nil {
					p.logger.Error("restoring table from snapshot", zap.String("table", name), zap.Error(err))
				} else if n > 0 {
					p.logger.Info("restored table from snapshot", zap.String("table", name), zap.Int("entries", n))
				}
			}
		}
		use.h.refs++
		p.tables[name] = use
		if err := s.planTableStoreLocked(p, name, tc, use.h.table); err != nil {
			return err
		}
	}
	return nil
}

func (s *stateOwner) planGroups(p *plan, app *App) error {
	for _, name := range sortedKeys(app.Peers) {
		cfg := app.Peers[name]
		if cfg == nil {
			return fmt.Errorf("peers %s: empty configuration (a secret is required)", name)
		}
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("peers %s: %v", name, err)
		}
		key := groupKey(name, cfg)
		h := s.groups[key]
		if h != nil {
			if h.cfg.Name != cfg.Name || h.cfg.Advertise != cfg.Advertise {
				return fmt.Errorf("peers %s: a running group cannot change its node name or advertise address in a reload (it holds %s); restart Caddy to apply it", name, cfg.Bind)
			}
		} else {
			h = &groupHandle{key: key, name: name, cfg: *cfg}
			s.groups[key] = h
		}
		h.refs++
		p.groups[name] = &groupUse{h: h, cfg: *cfg}
	}
	if len(p.groups) > 0 || p.persist != nil {
		s.ensureDrainTableLocked()
	}
	return nil
}

// start is the app's Start: the plan's new peer groups open their
// sockets (a port in use fails the config here, as a listener does). The
// plan then waits to be committed; only without lifecycle events does it
// commit here, when no config runs.
func (s *stateOwner) start(p *plan) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.phase != planProvisioned {
		return fmt.Errorf("sticky: config started twice")
	}
	for _, name := range sortedKeys(p.groups) {
		h := p.groups[name].h
		if h.group != nil {
			continue
		}
		g, err := peers.NewIdleGroup(h.cfg, p.logger.Named("peers").With(zap.String("group", name)))
		if err != nil {
			return fmt.Errorf("peers %s: %v", name, err)
		}
		h.group = g
	}
	s.startStoresLocked(p)
	p.phase = planStarted
	if !p.events && s.running == nil {
		return s.commitLocked(p)
	}
	return nil
}

// started: every app of p's config started. With no config running, p
// commits now; otherwise it waits for the running config to stop.
func (s *stateOwner) started(p *plan) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.phase == planStarted && s.running == nil {
		_ = s.commitLocked(p)
	}
}

// stopping: Caddy begins to stop p's config. If p runs, the newest started
// plan replaces it (a reload that succeeded), or the process stops its
// sticky state.
func (s *stateOwner) stopping(p *plan) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stoppingLocked(p)
}

func (s *stateOwner) stoppingLocked(p *plan) {
	if p.stopping {
		return
	}
	p.stopping = true
	if p.phase != planCommitted {
		return
	}
	p.phase = planRetired
	for i := len(s.plans) - 1; i >= 0; i-- {
		if q := s.plans[i]; q.phase == planStarted {
			_ = s.commitLocked(q)
			return
		}
	}
	s.running = nil
	s.publishLocked(nil)
	s.stopDrainSyncLocked()
	p.fullStop = true
}

// stop is the app's Stop. A plan that was never committed belongs to a
// config Caddy is abandoning (another app failed to start). For the
// running plan, Stop stands in for the stopping event when there is none.
func (s *stateOwner) stop(p *plan) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch p.phase {
	case planStarted:
		p.phase = planAborted
	case planCommitted:
		s.stoppingLocked(p)
	}
	return nil
}

// release is the app's Cleanup, which Caddy runs after every app of the
// config stopped: a full stop writes the snapshot now, then the plan's
// references are dropped, and a table or group no plan references any more
// is closed.
func (s *stateOwner) release(p *plan) {
	if p == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running == p {
		// cleaned up without a Stop (Caddy cancels a config that
		// failed after starting): it is not running any more
		s.running = nil
		s.publishLocked(nil)
		s.stopDrainSyncLocked()
	}
	if p.fullStop && p.persist != nil {
		if err := p.persist.save(p.tables, s.drainTable); err != nil {
			p.logger.Error("writing sticky snapshot", zap.Error(err))
		} else {
			p.logger.Info("wrote sticky snapshot", zap.Int("tables", len(p.tables)))
		}
	}
	s.releaseLocked(p)
	s.plans = slices.DeleteFunc(s.plans, func(q *plan) bool { return q == p })
}

func (s *stateOwner) releaseLocked(p *plan) {
	for name, u := range p.tables {
		if u.h.refs--; u.h.refs == 0 {
			delete(s.tables, u.h.key)
			if n := u.h.table.Len(); n > 0 && u.h.published {
				p.logger.Info("stick table dropped", zap.String("table", name), zap.Int("entries", n))
			}
			u.h.table.Close()
		}
	}
	p.tables = nil
	for _, u := range p.groups {
		if u.h.refs--; u.h.refs == 0 {
			delete(s.groups, u.h.key)
			if u.h.group == nil {
				continue // never started
			}
			p.logger.Info("leaving peer group", zap.String("group", u.h.name))
			if err := u.h.group.Close(); err != nil {
				p.logger.Warn("closing peer group", zap.String("group", u.h.name), zap.Error(err))
			}
		}
	}
	p.groups = nil
	s.releaseStoresLocked(p)
	if p.phase < planCommitted {
		p.phase = planAborted
	}
}

// commitLocked makes p the running config: settings, group keys and
// attachments, drain state restored from a snapshot, and the view readers
// see.
func (s *stateOwner) commitLocked(p *plan) error {
	prev := s.running
	for name, u := range p.tables {
		if !u.created {
			if cur := u.h.table.Config(); cur.Size == cmp.Or(u.cfg.Size, sticktable.DefaultSize) && cur.Expire == cmp.Or(u.cfg.Expire, sticktable.DefaultExpire) {
				// unchanged: a reload costs the table nothing
			} else if err := u.h.table.Reconfigure(u.cfg.Size, u.cfg.Expire); err != nil {
				// checked when planned; the table cannot have changed
				p.logger.Error("applying table settings", zap.String("table", name), zap.Error(err))
			}
			u.h.table.SetNoPurge(u.cfg.NoPurge)
		} else if prev != nil {
			if old := prev.tables[name]; old != nil {
				p.logger.Warn("table key type changed: the new table starts empty and the old one is dropped",
					zap.String("table", name),
					zap.String("old_type", old.h.table.Config().Type.String()),
					zap.String("new_type", u.cfg.Type.String()),
					zap.Int("dropped_entries", old.h.table.Len()))
			}
		}
	}
	if prev != nil {
		for _, name := range sortedKeys(prev.tables) {
			if _, ok := p.tables[name]; !ok {
				p.logger.Warn("table removed from the config; its entries are dropped", zap.String("table", name))
			}
		}
	}
	for _, name := range sortedKeys(p.groups) {
		u := p.groups[name]
		u.h.group.Join() // a group new with this config joins its cluster now
		u.h.group.SetMaxClockOffset(u.cfg.MaxClockOffset)
		if !slices.Equal(u.h.cfg.Secrets, u.cfg.Secrets) {
			if err := u.h.group.SetSecrets(u.cfg.Secrets); err != nil {
				p.logger.Error("peer group keys not updated", zap.String("group", name), zap.Error(err))
			} else {
				u.h.cfg.Secrets = slices.Clone(u.cfg.Secrets)
				p.logger.Info("peer group keys updated", zap.String("group", name), zap.Int("keys", len(u.cfg.Secrets)))
			}
		}
	}
	for name, u := range p.tables {
		if u.peers != "" {
			p.groups[u.peers].h.group.Attach(name, u.h.table)
		}
	}
	for _, u := range p.groups {
		for _, tname := range u.h.group.Tables() {
			if tname == drainTableName {
				continue
			}
			if tu, ok := p.tables[tname]; !ok || tu.peers != u.h.name {
				u.h.group.Detach(tname)
			}
		}
	}
	s.commitStoresLocked(p, prev)
	if prev == nil && p.snap != nil {
		s.restoreDrainLocked(p)
	}
	s.attachDrainLocked(p)
	p.snap = nil
	p.phase = planCommitted
	if prev != nil && prev.phase == planCommitted {
		prev.phase = planRetired
	}
	s.running = p
	s.publishLocked(p)
	s.reloadStoreDrainLocked(p)
	return nil
}

func (s *stateOwner) publishLocked(p *plan) {
	v := &stateView{byName: map[string]*tableHandle{}, peers: map[string]string{}, backings: map[string]*valkey.Table{}}
	if p != nil {
		for _, u := range p.stores {
			for name, b := range u.bindings {
				v.backings[name] = b
			}
		}
		if names := sortedKeys(p.stores); len(names) > 0 {
			v.drainStore = p.stores[names[0]].h.store
		}
		for _, name := range sortedKeys(p.tables) {
			h := p.tables[name].h
			h.published = true
			v.tables = append(v.tables, h)
			v.byName[name] = h
			v.peers[name] = p.tables[name].peers
		}
		for _, name := range sortedKeys(p.groups) {
			v.groups = append(v.groups, p.groups[name].h)
		}
		v.cookies = slices.Clone(p.cookies)
		v.tablePolicies = slices.Clone(p.tablePolicies)
	}
	s.view.Store(v)
}

// addCookiePolicy records a sticky_cookie policy of p's config; it shows
// in the admin API once p runs.
func (s *stateOwner) addCookiePolicy(p *plan, c *selection.StickyCookie) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Contains(p.cookies, c) {
		p.cookies = append(p.cookies, c)
	}
	if s.running == p {
		s.publishLocked(p)
	}
}

// addTablePolicy records a stick_table policy of p's config, for the
// status page.
func (s *stateOwner) addTablePolicy(p *plan, t *selection.StickTable) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Contains(p.tablePolicies, t) {
		p.tablePolicies = append(p.tablePolicies, t)
	}
	if s.running == p {
		s.publishLocked(p)
	}
}

// tablePolicyList returns the running config's stick_table policies.
func (s *stateOwner) tablePolicyList() []*selection.StickTable { return s.view.Load().tablePolicies }

// table returns the running config's table of that name, or nil.
func (s *stateOwner) table(name string) *tableHandle { return s.view.Load().byName[name] }

// tablePeers returns the peer group of the running config's table.
func (s *stateOwner) tablePeers(name string) string { return s.view.Load().peers[name] }

// tableList returns the running config's tables, sorted by name.
func (s *stateOwner) tableList() []*tableHandle { return s.view.Load().tables }

// groupList returns the running config's peer groups, sorted by name.
func (s *stateOwner) groupList() []*groupHandle { return s.view.Load().groups }

// cookiePolicies returns the running config's sticky_cookie policies.
func (s *stateOwner) cookiePolicies() []*selection.StickyCookie { return s.view.Load().cookies }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
