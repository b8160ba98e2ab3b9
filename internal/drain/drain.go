// Package drain holds which servers are drained: they keep the users stuck
// to them and get no new ones. The state is process-wide, so it survives
// config reloads; selection policies read it on every new user without a
// lock.
package drain

import (
	"slices"
	"sync"
	"sync/atomic"
)

var (
	mu       sync.Mutex
	current  atomic.Pointer[map[string]struct{}]
	observer atomic.Pointer[func(server string, drained bool)]
	// generation counts changes, so a reader that computed a new set from
	// elsewhere can tell whether a local change raced it
	generation atomic.Uint64
)

// Generation returns a number that changes whenever the drained set does.
func Generation() uint64 { return generation.Load() }

// ReplaceIf is Replace, done only if no change happened since Generation
// returned gen; it reports whether it replaced.
func ReplaceIf(gen uint64, servers []string) bool {
	mu.Lock()
	defer mu.Unlock()
	if generation.Load() != gen {
		return false
	}
	replaceLocked(servers)
	return true
}

// SetObserver installs fn to hear about every drain or undrain made through
// Set (not Replace), so the change can be replicated; nil removes it.
func SetObserver(fn func(server string, drained bool)) {
	if fn == nil {
		observer.Store(nil)
		return
	}
	observer.Store(&fn)
}

// Is reports whether server (a dial address or configured name) is drained.
func Is(server string) bool {
	m := current.Load()
	if m == nil {
		return false
	}
	_, ok := (*m)[server]
	return ok
}

// Any reports whether any server is drained, so callers skip filtering in
// the common case.
func Any() bool {
	m := current.Load()
	return m != nil && len(*m) > 0
}

// Set drains or undrains server and reports whether that changed anything.
func Set(server string, drained bool) bool {
	mu.Lock()
	defer mu.Unlock()
	old := current.Load()
	_, was := lookup(old, server)
	if was == drained {
		return false
	}
	next := make(map[string]struct{}, size(old)+1)
	if old != nil {
		for k := range *old {
			next[k] = struct{}{}
		}
	}
	if drained {
		next[server] = struct{}{}
	} else {
		delete(next, server)
	}
	current.Store(&next)
	generation.Add(1)
	if fn := observer.Load(); fn != nil {
		(*fn)(server, drained)
	}
	return true
}

// List returns the drained servers, sorted.
func List() []string {
	m := current.Load()
	if m == nil {
		return nil
	}
	out := make([]string, 0, len(*m))
	for k := range *m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Replace sets the drained servers to exactly servers, as a restored
// snapshot says.
func Replace(servers []string) {
	mu.Lock()
	defer mu.Unlock()
	replaceLocked(servers)
}

func replaceLocked(servers []string) {
	next := make(map[string]struct{}, len(servers))
	for _, s := range servers {
		next[s] = struct{}{}
	}
	current.Store(&next)
	generation.Add(1)
}

func lookup(m *map[string]struct{}, k string) (struct{}, bool) {
	if m == nil {
		return struct{}{}, false
	}
	v, ok := (*m)[k]
	return v, ok
}

func size(m *map[string]struct{}) int {
	if m == nil {
		return 0
	}
	return len(*m)
}
