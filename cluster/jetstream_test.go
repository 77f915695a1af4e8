package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/headroomdb/headroom/internal/natstest"
)

// The ground the cluster mode stands on: a stream replicated on three
// servers acknowledges a publish only once a quorum has it, keeps
// taking writes with one server down, de-duplicates a retried publish
// by its message ID, and a durable consumer resumes where it stopped.
func TestJetStreamGround(t *testing.T) {
	c := natstest.Start(t, 3)
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // a hang guard
	defer cancel()
	// Every call gets its own deadline and is tried again: a request
	// sent while a leader is being elected (at start, and after a server
	// goes) gets no answer at all.
	retry := func(what string, f func(ctx context.Context) error) {
		t.Helper()
		for {
			actx, acancel := context.WithTimeout(ctx, 5*time.Second)
			err := f(actx)
			acancel()
			if err == nil {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("%s: %v", what, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	var stream jetstream.Stream
	retry("create the replicated stream", func(ctx context.Context) (err error) {
		stream, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "WRITES", Subjects: []string{"writes.>"}, Replicas: 3, Duplicates: time.Minute})
		return err
	})
	// The partition's owner consumes with a durable consumer, replicated
	// as the stream (made while all three servers are up: placing three
	// replicas needs three servers).
	retry("create the durable consumer", func(ctx context.Context) error {
		_, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "owner-p0", AckPolicy: jetstream.AckExplicitPolicy})
		return err
	})
	pub := func(id string) (ack *jetstream.PubAck) {
		t.Helper()
		retry("publish "+id, func(ctx context.Context) (err error) {
			ack, err = js.Publish(ctx, "writes.p0", []byte("batch "+id), jetstream.WithMsgID(id))
			return err
		})
		return ack
	}
	a1 := pub("b1")
	if again := pub("b1"); !again.Duplicate || again.Sequence != a1.Sequence {
		t.Fatalf("a retried publish: %+v, want a duplicate of sequence %d", again, a1.Sequence)
	}
	// One server down: a quorum of two still acknowledges.
	c.Servers[2].Shutdown()
	pub("b2")
	pub("b3")
	var info *jetstream.StreamInfo
	retry("stream info", func(ctx context.Context) (err error) {
		info, err = stream.Info(ctx)
		return err
	})
	if info.State.Msgs != 3 {
		t.Fatalf("%d messages in the stream, want 3", info.State.Msgs)
	}
	// The consumer acknowledges two, and a new handle resumes at the
	// third.
	n := 0
	retry("fetch and acknowledge two", func(ctx context.Context) error {
		cons, err := stream.Consumer(ctx, "owner-p0")
		if err != nil {
			return err
		}
		batch, err := cons.Fetch(2-n, jetstream.FetchMaxWait(3*time.Second))
		if err != nil {
			return err
		}
		for m := range batch.Messages() {
			if err := m.DoubleAck(ctx); err != nil {
				return err
			}
			n++
		}
		if n < 2 {
			return fmt.Errorf("%d of 2", n)
		}
		return nil
	})
	var m jetstream.Msg
	retry("resume", func(ctx context.Context) error {
		again, err := stream.Consumer(ctx, "owner-p0")
		if err != nil {
			return err
		}
		m, err = again.Next(jetstream.FetchMaxWait(3 * time.Second))
		return err
	})
	if string(m.Data()) != "batch b3" {
		t.Fatalf("resumed at %q, want batch b3", m.Data())
	}
}
