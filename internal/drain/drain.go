// Package drain holds which servers are drained: they keep the users stuck
// to them and get no new ones. A Set is read by the selection policies on
// every new user without a lock; the sticky app's state owner holds the one
// Set of the process, so drains survive config reloads.
package drain

import (
	"slices"
	"sync"
	"sync/atomic"
)

// Set is a set of drained servers (dial addresses or configured names).
// The nil *Set is an empty set that cannot change, so policies provisioned
// without the sticky app (unit tests) need no special case.
type Set struct {
	mu       sync.Mutex
	current  atomic.Pointer[map[string]struct{}]
	observer atomic.Pointer[func(server string, drained bool)]
	// generation counts changes, so a reader that computed a new set from
	// elsewhere can tell whether a local change raced it
	generation atomic.Uint64
}

// New returns an empty set.
func New() *Set { return new(Set) }

// Generation returns a number that changes whenever the set does.
func (s *Set) Generation() uint64 {
	if s == nil {
		return 0
	}
	return s.generation.Load()
}

// ReplaceIf is Replace, done only if no change happened since Generation
// returned gen; it reports whether it replaced.
func (s *Set) ReplaceIf(gen uint64, servers []string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.generation.Load() != gen {
		return false
	}
	s.replaceLocked(servers)
	return true
}

// SetObserver installs fn to hear about every drain or undrain made through
// Set (not Replace), so the change can be recorded and replicated; nil
// removes it.
func (s *Set) SetObserver(fn func(server string, drained bool)) {
	if fn == nil {
		s.observer.Store(nil)
		return
	}
	s.observer.Store(&fn)
}

// Is reports whether server is drained.
func (s *Set) Is(server string) bool {
	if s == nil {
		return false
	}
	m := s.current.Load()
	if m == nil {
		return false
	}
	_, ok := (*m)[server]
	return ok
}

// Any reports whether any server is drained, so callers skip filtering in
// the common case.
func (s *Set) Any() bool {
	if s == nil {
		return false
	}
	m := s.current.Load()
	return m != nil && len(*m) > 0
}

// Set drains or undrains server and reports whether that changed anything.
func (s *Set) Set(server string, drained bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.current.Load()
	was := false
	if old != nil {
		_, was = (*old)[server]
	}
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
	s.current.Store(&next)
	s.generation.Add(1)
	if fn := s.observer.Load(); fn != nil {
		(*fn)(server, drained)
	}
	return true
}

// List returns the drained servers, sorted.
func (s *Set) List() []string {
	if s == nil {
		return nil
	}
	m := s.current.Load()
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
// snapshot or a replicated table says. The observer is not told: the
// caller already holds the state it replaces from.
func (s *Set) Replace(servers []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replaceLocked(servers)
}

func (s *Set) replaceLocked(servers []string) {
	next := make(map[string]struct{}, len(servers))
	for _, v := range servers {
		next[v] = struct{}{}
	}
	s.current.Store(&next)
	s.generation.Add(1)
}

func size(m *map[string]struct{}) int {
	if m == nil {
		return 0
	}
	return len(*m)
}
