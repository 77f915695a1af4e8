package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// listenFDsEnv passes the listening sockets from a process to the one it
// executes in its place: "grpc=FD,http=FD".
const listenFDsEnv = "HEADROOM_LISTEN_FDS"

// reexec replaces the process with a new run of the same binary and
// arguments, handing it both ports, so that clients never see them
// refused. It is the last resort of the reopen after a disk failure: when
// Pebble stopped inside a commit (storage.ErrWedged), or closing the data
// directory hangs, nothing in this process can open the directory again;
// a new one replays everything acknowledged, as after kill -9. It returns
// only on failure.
func reexec(ports *handoffPorts) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("restart in place: %w", err)
	}
	var fds []string
	var keep []*os.File // a File closes its descriptor when collected
	for _, p := range []struct {
		name string
		h    *handoff
	}{{"grpc", ports.grpc}, {"http", ports.http}} {
		tl, ok := p.h.lis.(*net.TCPListener)
		if !ok {
			return fmt.Errorf("restart in place: the %s port is a %T, not TCP", p.name, p.h.lis)
		}
		f, err := tl.File() // a duplicate, closed on exec unless told otherwise
		if err != nil {
			return fmt.Errorf("restart in place: %s port: %w", p.name, err)
		}
		keep = append(keep, f)
		rc, err := f.SyscallConn() // Fd would make the socket blocking
		if err != nil {
			return fmt.Errorf("restart in place: %s port: %w", p.name, err)
		}
		var errno syscall.Errno
		cerr := rc.Control(func(fd uintptr) {
			_, _, errno = syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_SETFD, 0)
			fds = append(fds, p.name+"="+strconv.Itoa(int(fd)))
		})
		if cerr != nil || errno != 0 {
			return fmt.Errorf("restart in place: keep the %s port open across exec: %v", p.name, errors.Join(cerr, errno))
		}
	}
	env := []string{listenFDsEnv + "=" + strings.Join(fds, ",")}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, listenFDsEnv+"=") {
			env = append(env, kv)
		}
	}
	err = syscall.Exec(exe, os.Args, env)
	runtime.KeepAlive(keep)
	return fmt.Errorf("restart in place: %w", err)
}

// inheritedPorts returns the ports a process restarted by reexec was
// handed (nil when it was not), and forgets them for the processes it
// starts.
func inheritedPorts() (*handoffPorts, error) {
	v, ok := os.LookupEnv(listenFDsEnv)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(listenFDsEnv)
	lis := map[string]net.Listener{}
	for _, kv := range strings.Split(v, ",") {
		name, fd, ok := strings.Cut(kv, "=")
		n, err := strconv.Atoi(fd)
		if !ok || err != nil || (name != "grpc" && name != "http") {
			return nil, fmt.Errorf("%s=%q: want grpc=FD,http=FD", listenFDsEnv, v)
		}
		f := os.NewFile(uintptr(n), name+" port")
		l, err := net.FileListener(f) // a duplicate of f
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: the %s port (fd %d): %w", listenFDsEnv, name, n, err)
		}
		lis[name] = l
	}
	if lis["grpc"] == nil || lis["http"] == nil {
		return nil, fmt.Errorf("%s=%q: want grpc=FD,http=FD", listenFDsEnv, v)
	}
	return &handoffPorts{grpc: newHandoff(lis["grpc"]), http: newHandoff(lis["http"])}, nil
}
