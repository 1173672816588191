package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"

	"falg/nfq"
	"falg/nft"
	"falg/test/lab"
)

// The queue floor: a static DNAT on floorPort whose first packets of each
// connection (the handshake and the first data segments: as many as
// conntrack counts up to -floor, which the bench prints, since the
// count a packet sees at the forward hook lags at times) pass through
// nfqueue to falg's own queue reader, in a process of its own like falg,
// with a handler that accepts them all. It costs what those trips
// through the queue cost by themselves: the part of falg's per-connection
// work (falg queues four packets of each TLS connection in the bench)
// that no handler can avoid.
const (
	floorPort  = 5444
	floorQueue = 9
)

var (
	floorPackets = flag.Int("floor", 4, "the queue floor queues a connection's packets while conntrack has counted at most this many")
	floorReader  = flag.Bool("floor-reader", false, "internal: be the queue floor's reader, in the router's namespace")
)

// queueFloor installs the floor's rule in the router and starts its
// reader, whose pid it returns; stop ends the reader and returns how many
// packets it accepted.
func queueFloor(ctx context.Context, l *lab.Lab) (pid int, stop func() (uint64, error), err error) {
	router := l.Router
	// ct packets needs conntrack's accounting.
	if out, err := router.Command(ctx, "sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1").CombinedOutput(); err != nil {
		return 0, nil, fmt.Errorf("queue floor: sysctl: %v %s", err, out)
	}
	err = router.Do(func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		kind, err := nft.DetectQueue(c)
		if err != nil {
			return err
		}
		t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "bench_floor"})
		ch := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
		// ct original proto-dst 5444 ct packets <= N counter queue num 9
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Ct{Register: 1, Key: expr.CtKeyPROTODST, Direction: 0},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(floorPort)},
			&expr.Ct{Register: 1, Key: expr.CtKeyPKTS},
			&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 8, Size: 8},
			&expr.Cmp{Op: expr.CmpOpLte, Register: 1, Data: binaryutil.BigEndian.PutUint64(uint64(*floorPackets))},
			&expr.Counter{},
			nft.QueueVerdict(kind, floorQueue, 1, false),
		}})
		return c.Flush()
	})
	if err != nil {
		return 0, nil, fmt.Errorf("queue floor: rule: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return 0, nil, err
	}
	cmd := router.Command(ctx, exe, "-floor-reader")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, nil, err
	}
	cmd.Stderr = os.Stderr
	if err := l.StartCmd(cmd); err != nil {
		return 0, nil, err
	}
	lines := bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != "ready" {
		cmd.Process.Kill()
		return 0, nil, fmt.Errorf("queue floor: reader did not start: %q", lines.Text())
	}
	// ip netns exec execs the reader: the process is the reader.
	return cmd.Process.Pid, func() (uint64, error) { return stopFloor(cmd, lines) }, nil
}

func stopFloor(cmd *exec.Cmd, lines *bufio.Scanner) (uint64, error) {
	cmd.Process.Signal(syscall.SIGTERM)
	if !lines.Scan() {
		return 0, fmt.Errorf("queue floor: reader ended without its count: %v", lines.Err())
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(lines.Text(), "accepted "), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("queue floor: reader said %q", lines.Text())
	}
	return n, nil
}

// runFloorReader is the floor's reader process: it accepts every packet
// of floorQueue until SIGTERM, then prints how many.
func runFloorReader() error {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	var st nfq.Stats
	err := nfq.Run(ctx, nfq.Config{First: floorQueue, Count: 1, Stats: &st,
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Handler: nfq.HandlerFunc(func(q *nfq.Queue, p *nfq.Packet) { q.Verdict(p.ID, nfq.Accept) }),
		Ready:   func() { fmt.Println("ready") }})
	if err != nil {
		return err
	}
	fmt.Printf("accepted %d\n", st.Accepted.Load())
	return nil
}
