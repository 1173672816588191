package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv selects a helper mode of TestHelperProcess in a subprocess.
const helperEnv = "FALG_LAB_HELPER"

// needLab skips (or fails under CI=true) when labs cannot be built here.
func needLab(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "lab: needs root")
	}
}

// newLab calls New, skipping when the environment cannot build labs.
func newLab(t *testing.T, o Options) *Lab {
	t.Helper()
	needLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := New(ctx, o)
	if errors.Is(err, ErrUnavailable) {
		unavailable(t, err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// netnsList returns the names `ip netns list` prints.
func netnsList(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

func nsNames(l *Lab) []string {
	var names []string
	for _, n := range l.Namespaces() {
		names = append(names, n.Name)
	}
	return names
}

// assertGone fails unless none of names is listed and the lab's marker is gone.
func assertGone(t *testing.T, id string, names []string) {
	t.Helper()
	list := netnsList(t)
	for _, n := range names {
		if slices.Contains(list, n) {
			t.Errorf("namespace %s still listed", n)
		}
	}
	if _, err := os.Stat(filepath.Join(markerDir, id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("marker %s: %v, want gone", id, err)
	}
}

// signalled reports whether a process was killed by SIGKILL.
func signalled(cmd *exec.Cmd) bool {
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// waitInside waits until process pid has entered namespace n.
func waitInside(t *testing.T, pid int, n *NS) {
	t.Helper()
	want, _ := statNS(n.Path())
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if id, ok := statNS(fmt.Sprintf("/proc/%d/ns/net", pid)); ok && id == want {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("process %d never entered %s", pid, n.Name)
}

// TestClose checks that Close kills owned and stray processes, removes every
// namespace and the marker, is idempotent, and that the lab refuses use after.
func TestClose(t *testing.T) {
	l := newLab(t, Options{Clients: 2, Backends: 2, Prefix: testPrefix})
	t.Cleanup(func() { l.Close() })
	names := nsNames(l)
	if len(names) != 5 {
		t.Fatalf("namespaces %v, want 5", names)
	}
	list := netnsList(t)
	for _, n := range names {
		if !slices.Contains(list, n) {
			t.Fatalf("namespace %s not listed after New: %v", n, list)
		}
	}
	if _, err := os.Stat(filepath.Join(markerDir, l.ID())); err != nil {
		t.Fatalf("marker: %v", err)
	}
	ctx := context.Background()
	owned, err := l.Start(l.Clients[0], ctx, "sleep", "300")
	if err != nil {
		t.Fatal(err)
	}
	stray := l.Backends[1].Command(ctx, "sleep", "300")
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	waitInside(t, stray.Process.Pid, l.Backends[1])
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("Close took %v", time.Since(start))
	if err := l.Wait(owned); err == nil || !signalled(owned) {
		t.Errorf("owned process: %v, want killed by SIGKILL", err)
	}
	stray.Wait()
	if !signalled(stray) {
		t.Errorf("stray process: %v, want killed by SIGKILL", stray.ProcessState)
	}
	assertGone(t, l.ID(), names)
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := l.Router.Do(func() error { return nil }); err == nil {
		t.Error("Do after Close succeeded")
	}
	if _, err := l.Start(l.Router, ctx, "true"); err == nil {
		t.Error("Start after Close succeeded")
	}
}

// TestStartProcess checks Lab.Start: the process runs in the namespace and
// ctx cancellation kills its whole process group.
func TestStartProcess(t *testing.T) {
	l := Start(t, Options{Prefix: testPrefix})
	ctx := context.Background()
	out, err := l.Clients[0].Run(ctx, "cat", "/proc/self/net/if_inet6")
	if err != nil || !strings.Contains(string(out), "fd000000000000000000000000000002") {
		t.Fatalf("client addresses: %v: %s", err, out)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The shell's child sleep shares the group and must die with it.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := l.Clients[0].Command(cctx, "sh", "-c", "sleep 300 & echo $!; wait")
	cmd.Stdout = w
	err = l.StartCmd(cmd)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	var child int
	if _, err := fmt.Fscan(r, &child); err != nil || child <= 0 {
		t.Fatalf("read child pid: %v", err)
	}
	cancel()
	done := make(chan error, 1)
	go func() { done <- l.Wait(cmd) }()
	select {
	case err := <-done:
		if err == nil || !signalled(cmd) {
			t.Errorf("Wait = %v, want killed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("process outlived its context")
	}
	deadline := time.Now().Add(2 * time.Second)
	for !gone(child) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !gone(child) {
		t.Errorf("grandchild %d outlived its group's context", child)
	}
	if err := l.Wait(exec.Command("true")); err == nil {
		t.Error("Wait on a foreign command succeeded")
	}
}

// gone reports whether pid no longer runs (it may be a zombie).
func gone(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(st), ')')
	return i > 0 && strings.HasPrefix(string(st[i:]), ") Z")
}

// TestHelperProcess is the body of subprocess tests; it does nothing unless
// FALG_LAB_HELPER names a mode.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("helper for subprocess tests")
	}
	prefix := os.Getenv(helperEnv + "_PREFIX")
	switch mode {
	case "panic":
		l := Start(t, Options{Prefix: prefix})
		fmt.Printf("ID %s\n", l.ID())
		for _, n := range l.Namespaces() {
			fmt.Printf("NS %s\n", n.Name)
		}
		panic("helper panic")
	case "hang":
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		l, err := New(ctx, Options{Prefix: prefix})
		if err != nil {
			fmt.Printf("ERR %v\n", err)
			os.Exit(3)
		}
		cmd, err := l.Start(l.Backends[0], context.Background(), "sleep", "300")
		if err != nil {
			fmt.Printf("ERR %v\n", err)
			os.Exit(3)
		}
		fmt.Printf("ID %s\nPID %d\n", l.ID(), cmd.Process.Pid)
		for _, n := range l.Namespaces() {
			fmt.Printf("NS %s\n", n.Name)
		}
		fmt.Println("READY")
		select {} // until killed
	case "loop":
		loopLabs(t, prefix, 10)
	default:
		t.Fatalf("unknown helper mode %q", mode)
	}
}

// helper starts this test binary in a helper mode.
func helper(t *testing.T, mode, prefix string) *exec.Cmd {
	t.Helper()
	needLab(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperEnv+"_PREFIX="+prefix)
	return cmd
}

// parseHelper reads the ID, PID and NS lines a helper printed.
func parseHelper(out string) (id string, pid int, names []string) {
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		switch f[0] {
		case "ID":
			id = f[1]
		case "PID":
			fmt.Sscan(f[1], &pid)
		case "NS":
			names = append(names, f[1])
		}
	}
	return id, pid, names
}

// TestPanicTearsDown runs a test that panics after Start in a subprocess and
// checks that its lab is gone.
func TestPanicTearsDown(t *testing.T) {
	cmd := helper(t, "panic", testPrefix)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("helper succeeded, want a panic:\n%s", out)
	}
	if !strings.Contains(string(out), "helper panic") {
		t.Fatalf("helper did not panic: %v\n%s", err, out)
	}
	id, _, names := parseHelper(string(out))
	if id == "" || len(names) != 4 {
		t.Fatalf("helper printed id %q, namespaces %v:\n%s", id, names, out)
	}
	assertGone(t, id, names)
}

// TestCleanupStale kills a process that owns a lab and checks that
// CleanupStale removes its namespaces and leftover processes but leaves a
// live lab with the same prefix alone.
func TestCleanupStale(t *testing.T) {
	const prefix = "falgstale"
	cmd := helper(t, "hang", prefix)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var buf strings.Builder
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		buf.WriteString(sc.Text() + "\n")
		if sc.Text() == "READY" {
			break
		}
	}
	id, pid, names := parseHelper(buf.String())
	if id == "" || pid == 0 || len(names) != 4 {
		t.Fatalf("helper printed:\n%s", buf.String())
	}
	live := newLab(t, Options{Prefix: prefix})
	t.Cleanup(func() { live.Close() })

	if got, err := CleanupStale(prefix); err != nil || len(got) != 0 {
		t.Fatalf("CleanupStale with live owner = %v, %v; want nothing", got, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if list := netnsList(t); !slices.Contains(list, names[0]) {
		t.Fatalf("namespaces vanished with their owner: %v", list)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("orphan sleep %d already gone: %v", pid, err)
	}
	got, err := CleanupStale(prefix)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(names))
	if !slices.Equal(got, want) {
		t.Errorf("CleanupStale removed %v, want %v", got, want)
	}
	assertGone(t, id, names)
	deadline := time.Now().Add(2 * time.Second)
	for !gone(pid) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !gone(pid) {
		t.Errorf("orphan process %d survived CleanupStale", pid)
	}
	list := netnsList(t)
	for _, n := range nsNames(live) {
		if !slices.Contains(list, n) {
			t.Errorf("live lab namespace %s removed", n)
		}
	}
}

// TestNoLeak builds and closes 10 labs in a subprocess that has a private
// network namespace as its root, so the link count there is not disturbed by
// anything else on the machine, and checks that nothing remains.
func TestNoLeak(t *testing.T) {
	cmd := helper(t, "loop", testPrefix)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestHelperProcess") {
		t.Fatalf("loop: %v\n%s", err, out)
	}
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, "lab timing") {
			t.Log(strings.TrimSpace(line))
		}
	}
	list := netnsList(t)
	for _, n := range list {
		if strings.HasPrefix(n, testPrefix+"-") {
			// Only labs of live test processes may remain.
			if m := filepath.Join(markerDir, n[:len(testPrefix)+9]); !markerAlive(m) {
				t.Errorf("stale namespace %s left behind", n)
			}
		}
	}
}

// loopLabs builds and closes n labs and fails if root-namespace links,
// namespaces or markers remain.
func loopLabs(t *testing.T, prefix string, n int) {
	linksBefore := links(t)
	var setup, teardown []time.Duration
	var ids []string
	for range n {
		t0 := time.Now()
		l := newLab(t, Options{Clients: 2, Backends: 2, Prefix: prefix})
		t1 := time.Now()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		setup = append(setup, t1.Sub(t0))
		teardown = append(teardown, time.Since(t1))
		ids = append(ids, l.ID())
	}
	if after := links(t); !slices.Equal(after, linksBefore) {
		t.Errorf("root namespace links grew: before %v, after %v", linksBefore, after)
	}
	list := netnsList(t)
	for _, id := range ids {
		for _, name := range list {
			if strings.HasPrefix(name, id+"-") {
				t.Errorf("namespace %s leaked", name)
			}
		}
		if _, err := os.Stat(filepath.Join(markerDir, id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("marker %s leaked", id)
		}
	}
	slices.Sort(setup)
	slices.Sort(teardown)
	fmt.Printf("lab timing (2 clients, 2 backends, %d runs): setup median %v max %v; teardown median %v max %v\n",
		n, setup[n/2], setup[n-1], teardown[n/2], teardown[n-1])
}

// links lists the links of the calling process's namespace, as `ip -o link` does.
func links(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link: %v: %s", err, out)
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 1 {
			names = append(names, f[0]+f[1])
		}
	}
	slices.Sort(names)
	return names
}

// BenchmarkLab measures building and closing a 2x2 lab.
func BenchmarkLab(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	for b.Loop() {
		l, err := New(context.Background(), Options{Clients: 2, Backends: 2, Prefix: testPrefix})
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
