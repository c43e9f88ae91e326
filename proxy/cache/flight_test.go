package cache

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"
)

// follow reads a flight as a follower does: Wait, then every byte to the end.
func follow(ctx context.Context, f *Flight) (Outcome, string, error) {
	defer f.Leave()
	out, err := f.Wait(ctx)
	if err != nil || out != Streaming {
		return out, "", err
	}
	var got []byte
	off := 0
	for {
		p, done, err := f.Read(ctx, off)
		got = append(got, p...)
		off += len(p)
		if err != nil {
			return out, string(got), err
		}
		if done {
			return out, string(got), nil
		}
	}
}

func TestFlightSharesAStreamFromTheStart(t *testing.T) {
	fs := NewFlights()
	k := Key{1}
	f, leader := fs.Join(k, 1<<20)
	if !leader {
		t.Fatal("first Join is not the leader")
	}
	f.Begin(200, http.Header{"Content-Type": {"text/event-stream"}}, -1)
	f.Write([]byte("data: 1\n\n"))
	f.Write([]byte("data: 2\n\n"))

	// A follower arriving mid-stream gets what was sent, then the rest live.
	g, leader := fs.Join(k, 1<<20)
	if leader || g != f {
		t.Fatal("second Join did not join the flight")
	}
	type res struct {
		out  Outcome
		body string
		err  error
	}
	done := make(chan res, 1)
	go func() {
		out, body, err := follow(context.Background(), g)
		done <- res{out, body, err}
	}()
	f.Write([]byte("data: 3\n\n"))
	f.Write([]byte("data: [DONE]\n\n"))
	body, ok := f.Complete(3, 4)
	want := "data: 1\n\ndata: 2\n\ndata: 3\n\ndata: [DONE]\n\n"
	if !ok || string(body) != want {
		t.Errorf("leader's Complete = %q, %v; want the whole stream, storable", body, ok)
	}
	r := <-done
	if r.err != nil || r.out != Streaming || r.body != want {
		t.Errorf("follower got %v %q %v; want Streaming and the whole stream", r.out, r.body, r.err)
	}
	if p, c := g.Usage(); p != 3 || c != 4 {
		t.Errorf("Usage = %d, %d; want the leader's 3, 4", p, c)
	}
	status, h, _ := f.Head()
	if status != 200 || h.Get("Content-Type") != "text/event-stream" {
		t.Errorf("Head = %d %v", status, h)
	}
	// Until Close, a late joiner gets the complete answer at once.
	late, leader := fs.Join(k, 1<<20)
	if leader {
		t.Fatal("a complete flight is still joinable until Close")
	}
	if out, body, err := follow(context.Background(), late); err != nil || out != Streaming || body != want {
		t.Errorf("late follower got %v %q %v", out, body, err)
	}
	f.Close()
	if _, leader := fs.Join(k, 1<<20); !leader {
		t.Error("after Close a Join should lead a new flight")
	}
}

func TestFlightFailureReleasesFollowers(t *testing.T) {
	fs := NewFlights()
	f, _ := fs.Join(Key{2}, 100)
	var wg sync.WaitGroup
	outs := make([]Outcome, 10)
	for i := range outs {
		g, leader := fs.Join(Key{2}, 100)
		if leader {
			t.Fatal("follower led")
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], _, _ = follow(context.Background(), g)
		}()
	}
	f.Fail()
	wg.Wait()
	for i, out := range outs {
		if out != Released {
			t.Errorf("follower %d: %v; want Released", i, out)
		}
	}
	if fs.Stats().Flights != 0 {
		t.Error("a failed flight is still joinable")
	}
}

func TestFlightBreakMidStream(t *testing.T) {
	fs := NewFlights()
	f, _ := fs.Join(Key{3}, 100)
	g, _ := fs.Join(Key{3}, 100)
	f.Begin(200, http.Header{}, -1)
	f.Write([]byte("data: 1\n\n"))
	if out, _ := g.Wait(context.Background()); out != Streaming {
		t.Fatalf("Wait = %v; want Streaming", out)
	}
	p, _, err := g.Read(context.Background(), 0)
	if string(p) != "data: 1\n\n" || err != nil {
		t.Fatalf("Read = %q, %v", p, err)
	}
	f.Fail()
	if _, _, err := g.Read(context.Background(), len(p)); !errors.Is(err, ErrBroken) {
		t.Errorf("Read after the leader broke: %v; want ErrBroken", err)
	}
	g.Leave()
}

func TestFlightHitAndContext(t *testing.T) {
	fs := NewFlights()
	f, _ := fs.Join(Key{4}, 100)
	g, _ := fs.Join(Key{4}, 100)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := g.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait with no outcome: %v; want the context's error", err)
	}
	e := &Entry{Status: 200, Body: []byte("x")}
	f.Hit(e)
	if out, _ := g.Wait(context.Background()); out != Shared || g.Entry() != e {
		t.Errorf("after Hit: %v %v; want Shared and the entry", out, g.Entry())
	}
	g.Leave()
}

func TestFlightOverflow(t *testing.T) {
	fs := NewFlights()
	f, _ := fs.Join(Key{5}, 10)
	g, _ := fs.Join(Key{5}, 10)
	f.Begin(200, http.Header{}, -1)
	f.Write([]byte("0123456789abc"))
	if _, leader := fs.Join(Key{5}, 10); !leader {
		t.Error("an answer above the limit is still joinable")
	}
	f.Write([]byte("def"))
	if _, ok := f.Complete(0, 0); ok {
		t.Error("an answer above the limit is storable")
	}
	// The follower that joined before still gets all of it.
	if out, body, err := follow(context.Background(), g); out != Streaming || body != "0123456789abcdef" || err != nil {
		t.Errorf("follower of an oversized answer: %v %q %v", out, body, err)
	}
}

func TestFlightLeaderGone(t *testing.T) {
	fs := NewFlights()
	f, _ := fs.Join(Key{6}, 100)
	if f.LeaderGone(func() { t.Error("abandon without followers") }) {
		t.Error("LeaderGone with no follower reports followers")
	}
	f.Fail()

	f, _ = fs.Join(Key{7}, 100)
	g, _ := fs.Join(Key{7}, 100)
	abandoned := false
	if !f.LeaderGone(func() { abandoned = true }) {
		t.Fatal("LeaderGone with a follower reports none")
	}
	g.Leave()
	if !abandoned {
		t.Error("the last follower left; abandon not called")
	}
}
