package drain

import (
	"reflect"
	"sync"
	"testing"
)

func TestSetIsList(t *testing.T) {
	s := New()
	if s.Any() || s.Is("a:1") {
		t.Fatal("nothing is drained at first")
	}
	if !s.Set("b:2", true) || !s.Set("a:1", true) || s.Set("a:1", true) {
		t.Fatal("Set must report changes only")
	}
	if !s.Is("a:1") || s.Is("c:3") || !s.Any() {
		t.Fatal("wrong membership")
	}
	if got := s.List(); !reflect.DeepEqual(got, []string{"a:1", "b:2"}) {
		t.Fatalf("List = %v", got)
	}
	if !s.Set("a:1", false) || s.Is("a:1") || s.Set("a:1", false) {
		t.Fatal("undrain failed")
	}
	s.Replace([]string{"x:9"})
	if !reflect.DeepEqual(s.List(), []string{"x:9"}) {
		t.Fatal("Replace failed")
	}
}

func TestNilSetIsEmpty(t *testing.T) {
	var s *Set
	if s.Any() || s.Is("a:1") || s.List() != nil || s.Generation() != 0 {
		t.Fatal("a nil set must read as empty")
	}
}

func TestSetsAreIndependent(t *testing.T) {
	a, b := New(), New()
	a.Set("x:1", true)
	if b.Is("x:1") || b.Any() {
		t.Fatal("a drain in one set leaked into another")
	}
}

func TestConcurrentReadersAndWriters(t *testing.T) {
	s := New()
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for j := 0; j < 1000; j++ {
				s.Set("s:1", j%2 == 0)
			}
		}()
		go func() {
			defer wg.Done()
			for j := 0; j < 1000; j++ {
				_ = s.Is("s:1")
				_ = s.List()
			}
		}()
	}
	wg.Wait()
}

func TestObserverHearsSetOnly(t *testing.T) {
	s := New()
	var got []string
	s.SetObserver(func(v string, d bool) {
		if d {
			got = append(got, "+"+v)
		} else {
			got = append(got, "-"+v)
		}
	})
	s.Set("a:1", true)
	s.Set("a:1", true) // no change, no call
	s.Replace([]string{"b:2"})
	s.Set("b:2", false)
	if !reflect.DeepEqual(got, []string{"+a:1", "-b:2"}) {
		t.Fatalf("observer heard %v", got)
	}
	s.SetObserver(nil)
	s.Set("c:3", true)
	if len(got) != 2 {
		t.Fatalf("a removed observer still heard: %v", got)
	}
}

func TestReplaceIfLosesToARacingSet(t *testing.T) {
	s := New()
	gen := s.Generation()
	s.Set("x:1", true)
	if s.ReplaceIf(gen, nil) {
		t.Fatal("ReplaceIf overwrote a change made after its generation")
	}
	if !s.Is("x:1") {
		t.Fatal("the racing change was lost")
	}
	if !s.ReplaceIf(s.Generation(), []string{"y:1"}) || !s.Is("y:1") || s.Is("x:1") {
		t.Fatal("ReplaceIf with a current generation must replace")
	}
}
