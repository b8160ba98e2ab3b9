package snapfile

import (
	"reflect"
	"testing"
	"time"

	"github.com/caddy-sticky/sticky/internal/fuzzsmoke"
)

func TestRoundTrip(t *testing.T) {
	in := []Table{{Name: "a", Snapshot: []byte("xyz")}, {Name: "b", Snapshot: nil}}
	b, err := Encode(in, []byte("drain"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if string(f.Tables["a"]) != "xyz" || len(f.Tables["b"]) != 0 || len(f.Tables) != 2 || string(f.DrainTable) != "drain" || f.Drained != nil {
		t.Fatalf("decoded %+v", f)
	}
	b, _ = Encode(nil, nil)
	if f, err := Decode(b); err != nil || len(f.Tables) != 0 || f.DrainTable != nil {
		t.Fatalf("empty snapshot: %+v %v", f, err)
	}
}

func TestReadsFormat1(t *testing.T) {
	b := []byte("STKYSNAP\x01\x00\x00\x00\x01\x00\x03a:1\x00\x00\x00\x01\x00\x01t\x00\x00\x00\x02xy")
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.Drained, []string{"a:1"}) || string(f.Tables["t"]) != "xy" || f.DrainTable != nil {
		t.Fatalf("decoded %+v", f)
	}
}

func TestRejectsGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, []byte("STKYSNAP"), []byte("STKYSNAP\x03"), []byte("NOTASNAP\x01"), append([]byte("STKYSNAP\x01\x00\x00\x00\x01\x00\x05"), 'a'), []byte("STKYSNAP\x02\x00\x00\x00\x01\x00\x01t\xff\xff\xff\xff")} {
		if _, err := Decode(b); err == nil {
			t.Errorf("accepted %q", b)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("STKYSNAP\x01\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Add([]byte("STKYSNAP\x01\x00\x00\x00\x01\x00\x03a:1\x00\x00\x00\x01\x00\x01t\x00\x00\x00\x02xy"))
	b, _ := Encode([]Table{{Name: "t", Snapshot: []byte("x")}}, []byte("d"))
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := Decode(b)
		if err != nil {
			return
		}
		// what decodes re-encodes (format 2) to something that decodes alike
		tables := make([]Table, 0, len(file.Tables))
		for name, s := range file.Tables {
			tables = append(tables, Table{Name: name, Snapshot: s})
		}
		again, err := Encode(tables, file.DrainTable)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Decode(again)
		if err != nil || len(back.Tables) != len(file.Tables) || string(back.DrainTable) != string(file.DrainTable) {
			t.Fatalf("re-encoded snapshot decodes differently: %v", err)
		}
	})
}

func TestFuzzTargetsBriefly(t *testing.T) {
	fuzzsmoke.Run(t, 5*time.Second, "FuzzDecode")
}
