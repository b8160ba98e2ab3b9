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
