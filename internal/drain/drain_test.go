package drain

import (
	"reflect"
	"sync"
	"testing"
)

func TestSetIsList(t *testing.T) {
	Replace(nil)
	if Any() || Is("a:1") {
		t.Fatal("nothing is drained at first")
	}
	if !Set("b:2", true) || !Set("a:1", true) || Set("a:1", true) {
		t.Fatal("Set must report changes only")
	}
	if !Is("a:1") || Is("c:3") || !Any() {
		t.Fatal("wrong membership")
	}
	if got := List(); !reflect.DeepEqual(got, []string{"a:1", "b:2"}) {
		t.Fatalf("List = %v", got)
	}
	if !Set("a:1", false) || Is("a:1") || Set("a:1", false) {
		t.Fatal("undrain failed")
	}
	Replace([]string{"x:9"})
	if !reflect.DeepEqual(List(), []string{"x:9"}) {
		t.Fatal("Replace failed")
	}
	Replace(nil)
}

func TestConcurrentReadersAndWriters(t *testing.T) {
	Replace(nil)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for j := 0; j < 1000; j++ {
				Set("s:1", j%2 == 0)
			}
		}()
		go func() {
			defer wg.Done()
			for j := 0; j < 1000; j++ {
				_ = Is("s:1")
				_ = List()
			}
		}()
	}
	wg.Wait()
	Replace(nil)
}

func TestObserverHearsSetOnly(t *testing.T) {
	Replace(nil)
	var got []string
	SetObserver(func(s string, d bool) {
		if d {
			got = append(got, "+"+s)
		} else {
			got = append(got, "-"+s)
		}
	})
	defer SetObserver(nil)
	Set("a:1", true)
	Set("a:1", true) // no change, no call
	Replace([]string{"b:2"})
	Set("b:2", false)
	if !reflect.DeepEqual(got, []string{"+a:1", "-b:2"}) {
		t.Fatalf("observer heard %v", got)
	}
	Replace(nil)
}

func TestReplaceIfLosesToARacingSet(t *testing.T) {
	Replace(nil)
	gen := Generation()
	Set("x:1", true)
	if ReplaceIf(gen, nil) {
		t.Fatal("ReplaceIf overwrote a change made after its generation")
	}
	if !Is("x:1") {
		t.Fatal("the racing change was lost")
	}
	if !ReplaceIf(Generation(), []string{"y:1"}) || !Is("y:1") || Is("x:1") {
		t.Fatal("ReplaceIf with a current generation must replace")
	}
	Replace(nil)
}
