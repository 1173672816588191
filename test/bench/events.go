package main

import (
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"falg/seqnat"
	"falg/test/lab"
)

// eventsEntries is how many conntrack entries each kind of the events part
// creates and deletes.
const eventsEntries = 20000

// eventsBench measures what falg spends on conntrack destroy events: it
// creates entries in the router's table and deletes them, once unmarked
// (the router's other traffic, which falg's kernel filter drops) and once
// with falg's flow mark (events falg must read; it has no record of these
// entries, so it does no more than read and look them up). It reports
// falg's CPU per event of each kind, its idle CPU over the same time taken
// out; the marked entries are the baseline.
func eventsBench(l *lab.Lab, pid int, mark uint32) error {
	var ct *seqnat.Conn
	if err := l.Router.Do(func() (err error) { ct, err = seqnat.Dial(); return err }); err != nil {
		return err
	}
	defer ct.Close()
	idle := idleCPU(pid, time.Second)
	fmt.Printf("conntrack destroy events, %d entries of each kind (falg's idle CPU, %.1f ms/s, taken out)\n",
		eventsEntries, idle*1e3)
	var per [2]float64
	for i, m := range []uint32{0x42, mark} {
		flows := make([]seqnat.Flow, eventsEntries)
		for j := range flows {
			src := netip.AddrFrom4([4]byte{10, 200, byte(j >> 8), byte(j)})
			flows[j] = seqnat.Flow{
				Proto:   unix.IPPROTO_UDP,
				Orig:    seqnat.Tuple{Src: netip.AddrPortFrom(src, 5000), Dst: netip.MustParseAddrPort("10.201.0.1:53")},
				Mark:    m,
				Timeout: 600,
			}
			if err := ct.Create(flows[j]); err != nil {
				return fmt.Errorf("events: create: %w", err)
			}
		}
		start, cpu0 := time.Now(), cpuTime(pid)
		for _, f := range flows {
			if err := ct.Delete(f.Proto, f.Orig); err != nil {
				return fmt.Errorf("events: delete: %w", err)
			}
		}
		time.Sleep(300 * time.Millisecond) // falg reads what is left
		spent := (cpuTime(pid) - cpu0).Seconds() - idle*time.Since(start).Seconds()
		per[i] = max(spent, 0) / eventsEntries * 1e6
	}
	fmt.Printf("  others' entries: %6.2f us falg CPU per event\n", per[0])
	fmt.Printf("  falg's mark:     %6.2f us falg CPU per event\n", per[1])
	if per[1] > 0 {
		fmt.Printf("  others'/falg's:  %6.2f\n", per[0]/per[1])
	}
	return nil
}

// idleCPU is the CPU process pid uses per second of wall time over d.
func idleCPU(pid int, d time.Duration) float64 {
	cpu0 := cpuTime(pid)
	time.Sleep(d)
	return (cpuTime(pid) - cpu0).Seconds() / d.Seconds()
}
