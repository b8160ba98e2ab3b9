package sticky

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-sticky/sticky/sticktable"
)

// tablePool holds every live table, refcounted by the configs that use it.
// On a reload the new config takes its references before the old one lets
// go, so a kept table never drops to zero and never loses an entry.
var tablePool = caddy.NewUsagePool()

// drainRestored makes the drain list in a snapshot apply once per process:
// later configs must not undo drains made through the admin API.
var drainRestored atomic.Bool

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

// tableHandle is a pooled table.
type tableHandle struct {
	key    string // its key in tablePool
	name   string
	table  *sticktable.Table
	peers  string
	logger *zap.Logger
}

// Destruct runs when the last config using the table is gone.
func (h *tableHandle) Destruct() error {
	if n := h.table.Len(); n > 0 {
		h.logger.Info("stick table dropped", zap.String("table", h.name), zap.Int("entries", n))
	}
	h.table.Close()
	return nil
}

// registry is what the admin API sees: the tables of the newest running
// config. It is read at request time, never through ctx.App.
var registry = &tableRegistry{}

type tableRegistry struct {
	mu     sync.RWMutex
	owner  *App
	tables map[string]*tableHandle
	// prev is the config that published before owner: if owner is
	// cleaned up without ever having replaced it (another app failed to
	// start, so Caddy keeps running prev), prev's tables come back.
	prevOwner  *App
	prevTables map[string]*tableHandle
}

// replace publishes app's tables and returns the names the previous config
// had that app does not.
func (r *tableRegistry) replace(app *App, tables map[string]*tableHandle) (removed []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name := range r.tables {
		if _, ok := tables[name]; !ok {
			removed = append(removed, name)
		}
	}
	sort.Strings(removed)
	r.prevOwner, r.prevTables = r.owner, r.tables
	r.owner, r.tables = app, tables
	return removed
}

// forget unpublishes app's tables unless a newer config replaced them. If
// app was aborted after publishing (its config never replaced the running
// one), the running config's tables are published again.
func (r *tableRegistry) forget(app *App) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.prevOwner == app {
		r.prevOwner, r.prevTables = nil, nil
	}
	if r.owner != app {
		return
	}
	r.owner, r.tables = nil, nil
	if r.prevOwner != nil && !r.prevOwner.cleaned.Load() {
		r.owner, r.tables = r.prevOwner, r.prevTables
	}
	r.prevOwner, r.prevTables = nil, nil
}

// owns reports whether app's tables are the published ones: no newer
// config has started.
func (r *tableRegistry) owns(app *App) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.owner == app
}

func (r *tableRegistry) get(name string) *tableHandle {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.tables[name]
}

// list returns the published tables sorted by name.
func (r *tableRegistry) list() []*tableHandle {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*tableHandle, 0, len(r.tables))
	for _, h := range r.tables {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}
