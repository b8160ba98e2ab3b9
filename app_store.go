package sticky

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-sticky/sticky/sticktable"
	"github.com/caddy-sticky/sticky/store/valkey"
)

// StoreConfig is one shared store of the sticky app: where tables that
// name it keep their authoritative copy.
type StoreConfig struct {
	// A Valkey or Redis (>= 7) server or cluster.
	Valkey *valkey.Config `json:"valkey,omitempty"`
}

// storeHandle is a store client and how many plans reference it. Stores
// are pooled by name and resolved configuration, so a reload that keeps
// the store keeps its connection and its breaker state.
type storeHandle struct {
	key   string
	name  string
	store *valkey.Store
	refs  int
}

// storeUse is a store as one config uses it, with the bindings of the
// tables that name it (attached to the store when the plan commits).
type storeUse struct {
	h        *storeHandle
	bindings map[string]*valkey.Table
}

// planStoresLocked validates and references the config's stores.
func (s *stateOwner) planStoresLocked(p *plan, app *App, logger *zap.Logger) error {
	repl := caddy.NewReplacer()
	for _, name := range sortedKeys(app.Stores) {
		sc := app.Stores[name]
		if sc == nil || sc.Valkey == nil {
			return fmt.Errorf("store %s: needs a valkey block", name)
		}
		cfg := sc.Valkey.Resolved(repl)
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("store %s: %v", name, err)
		}
		raw, _ := json.Marshal(cfg)
		key := name + "\x00" + string(raw)
		h := s.stores[key]
		if h == nil {
			// Connected at Start, like new peer groups bind there: a config
			// that is only validated opens nothing.
			st, err := valkey.New(name, cfg, valkey.Options{Logger: logger.Named("store").With(zap.String("store", name)), Deferred: true})
			if err != nil {
				return fmt.Errorf("store %s: %v", name, err)
			}
			h = &storeHandle{key: key, name: name, store: st}
			s.stores[key] = h
			// Drains made through any instance reach this one's set,
			// while this store is the running config's drain store.
			st.OnDrainChange(func(servers []string) {
				if s.view.Load().drainStore == st {
					s.adoptStoreDrained(servers)
				}
			})
		}
		h.refs++
		p.stores[name] = &storeUse{h: h, bindings: map[string]*valkey.Table{}}
	}
	return nil
}

// planTableStoreLocked binds a table that names a store.
func (s *stateOwner) planTableStoreLocked(p *plan, name string, tc *TableConfig, t *sticktable.Table) error {
	if tc.Store == "" {
		return nil
	}
	if tc.Peers != "" {
		return fmt.Errorf("table %s: store and peers are exclusive (the store already shares the table)", name)
	}
	u, ok := p.stores[tc.Store]
	if !ok {
		return fmt.Errorf("table %s: no store named %q (add `store %s { valkey { ... } }` to the sticky option)", name, tc.Store, tc.Store)
	}
	b, err := u.h.store.Table(name, t)
	if err != nil {
		return fmt.Errorf("table %s: %v", name, err)
	}
	u.bindings[name] = b
	return nil
}

// commitStoresLocked attaches the plan's bindings; bindings of the
// previous plan that this one does not have are detached.
func (s *stateOwner) commitStoresLocked(p, prev *plan) {
	if prev != nil {
		for sname, u := range prev.stores {
			for tname, b := range u.bindings {
				if nu, ok := p.stores[sname]; !ok || nu.h != u.h || nu.bindings[tname] == nil {
					u.h.store.Detach(b)
				}
			}
		}
	}
	for _, u := range p.stores {
		for _, b := range u.bindings {
			u.h.store.Attach(b)
		}
	}
}

// reloadStoreDrainLocked reads the fleet's drained servers from the
// running config's drain store; it runs once the plan is published, so
// the answer is taken (the change callback checks the published store).
func (s *stateOwner) reloadStoreDrainLocked(p *plan) {
	if names := sortedKeys(p.stores); len(names) > 0 {
		p.stores[names[0]].h.store.ReloadDrain()
	}
}

// storeDrain records a drain or undrain in the running config's drain
// store, if it has one, so every instance sharing it learns it.
func (s *stateOwner) storeDrain(ctx context.Context, server string, drained bool) error {
	st := s.view.Load().drainStore
	if st == nil {
		return nil
	}
	if drained {
		return st.Drain(ctx, server)
	}
	return st.Undrain(ctx, server)
}

// releaseStoresLocked drops the plan's store references; a store nobody
// references any more is closed.
func (s *stateOwner) releaseStoresLocked(p *plan) {
	for name, u := range p.stores {
		if u.h.refs--; u.h.refs == 0 {
			delete(s.stores, u.h.key)
			p.logger.Info("closing store", zap.String("store", name))
			u.h.store.Close()
		}
	}
	p.stores = nil
}

// backing returns the store binding of the named table of p, or nil.
func (p *plan) backing(name string) *valkey.Table {
	for _, u := range p.stores {
		if b := u.bindings[name]; b != nil {
			return b
		}
	}
	return nil
}

// TableBacking returns the shared store behind the named table of this
// config, or nil when the table has none (selection.BackingSource).
func (a *App) TableBacking(name string) sticktable.Backing {
	if a.plan == nil {
		return nil
	}
	if b := a.plan.backing(name); b != nil {
		return b
	}
	return nil
}

// tableBacking returns the store binding of the named table of the
// running config, or nil, for the admin API.
func (s *stateOwner) tableBacking(name string) *valkey.Table {
	return s.view.Load().backings[name]
}

// storeUnavailable is the admin API's answer when a change was applied
// to the local table but the store did not take it.
func storeUnavailable(table string, err error) error {
	return apiErrorf(http.StatusServiceUnavailable,
		"applied to this instance's table %q only: the shared store did not take it (%v); other instances do not see it", table, err)
}

// showStoreTable lists a store-backed table as the store holds it, a SCAN
// page at a time: `after` is then the opaque cursor of the previous
// page's `next` (the CLI passes it back unchanged), entries are not
// sorted, and `server` filters each page.
func showStoreTable(w http.ResponseWriter, r *http.Request, name string, h *tableHandle, b *valkey.Table, q map[string]string, limit int) error {
	now := h.table.Now()
	if key, ok := q["key"]; ok {
		k, err := h.table.ParseKey(key)
		if err != nil {
			return tableError(name, err)
		}
		e, found, err := b.Get(r.Context(), k)
		if err != nil {
			return storeUnavailable(name, err)
		}
		page := entryPage{Entries: []entryInfo{}}
		if found && (q["server"] == "" || q["server"] == e.Server) {
			page.Entries = append(page.Entries, makeEntryInfo(e, now))
		}
		return writeJSON(w, http.StatusOK, page)
	}
	entries, next, err := b.List(r.Context(), q["after"], limit)
	if err != nil {
		if strings.Contains(err.Error(), "cursor") {
			return apiErrorf(http.StatusBadRequest, "%v", err)
		}
		return storeUnavailable(name, err)
	}
	page := entryPage{Entries: make([]entryInfo, 0, len(entries)), More: next != "", Next: next}
	for _, e := range entries {
		if srv, ok := q["server"]; ok && srv != e.Server {
			continue
		}
		page.Entries = append(page.Entries, makeEntryInfo(e, now))
	}
	return writeJSON(w, http.StatusOK, page)
}

// startStoresLocked connects the plan's new stores (the app's Start).
func (s *stateOwner) startStoresLocked(p *plan) {
	for _, name := range sortedKeys(p.stores) {
		p.stores[name].h.store.Connect()
	}
}

// storeStatuses describes the running config's stores, for the status
// page and its JSON.
func (s *stateOwner) storeStatuses() []storeStatus {
	v := s.view.Load()
	byStore := map[*valkey.Store][]string{}
	var order []*valkey.Store
	for _, name := range sortedKeys(v.backings) {
		st := v.backings[name].Store()
		if _, ok := byStore[st]; !ok {
			order = append(order, st)
		}
		byStore[st] = append(byStore[st], name)
	}
	out := []storeStatus{}
	for _, st := range order {
		stats := st.Stats()
		out = append(out, storeStatus{Name: st.Name(), Prefix: st.Prefix(), Tables: byStore[st],
			BreakerOpen: stats.BreakerOpen, Resyncing: st.Resyncing(), Calls: stats.Calls, Invalidations: stats.Invalidations})
	}
	return out
}
