package main

import (
	"net"
	"sync"
)

// handoff keeps a port open for the life of the process while servers
// come and go on it: when the storage failed a write and the disk takes
// writes again, runServe stops the server and opens a new one on the same
// directory. Connections that arrive in between wait in the kernel's
// backlog, and are served by the new server, instead of being refused.
type handoff struct {
	lis     net.Listener
	conns   chan net.Conn
	closing chan struct{}
	dead    chan struct{} // closed once the port stops accepting; err says why
	err     error
	once    sync.Once
}

func newHandoff(lis net.Listener) *handoff {
	h := &handoff{lis: lis, conns: make(chan net.Conn), closing: make(chan struct{}), dead: make(chan struct{})}
	go h.loop()
	return h
}

func (h *handoff) loop() {
	defer close(h.dead)
	for {
		c, err := h.lis.Accept()
		if err != nil {
			h.err = err
			return
		}
		select {
		case h.conns <- c:
		case <-h.closing:
			c.Close()
			h.err = net.ErrClosed
			return
		}
	}
}

// Close closes the port, when the process ends.
func (h *handoff) Close() error {
	h.once.Do(func() { close(h.closing) })
	return h.lis.Close()
}

// view is the listener of one server on the port: closing it stops that
// server's accepting, not the port.
func (h *handoff) view() net.Listener {
	return &handoffView{h: h, done: make(chan struct{})}
}

type handoffView struct {
	h    *handoff
	done chan struct{}
	once sync.Once
}

func (v *handoffView) Accept() (net.Conn, error) {
	select {
	case <-v.done:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-v.h.conns:
		return c, nil
	case <-v.done:
		return nil, net.ErrClosed
	case <-v.h.dead:
		return nil, v.h.err
	}
}

func (v *handoffView) Close() error {
	v.once.Do(func() { close(v.done) })
	return nil
}

func (v *handoffView) Addr() net.Addr { return v.h.lis.Addr() }
