package dump_test

import (
	"fmt"
	"os"

	"falg/dump"
)

// A capture printed the way falg dump -r does, with a Decider that stands
// in for falg's parsers and routing.
func ExampleReadPcap() {
	f, err := os.Open("testdata/fixture.pcap")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer f.Close()
	pr := dump.Printer{W: os.Stdout, Decider: dump.DeciderFunc(func(p *dump.Packet, l *dump.Line) {
		if l.DstPort == 443 && len(l.Payload) > 0 && l.Payload[0] == 0x16 {
			l.Name, l.Decision = "a.example", "10.0.1.2:443"
		}
	})}
	n := 0
	err = dump.ReadPcap(f, func(p *dump.Packet) error {
		if n++; n != 1 && n != 4 && n != 13 {
			return nil
		}
		p.Time = p.Time.UTC()
		return pr.Print(p)
	})
	if err != nil {
		fmt.Println(err)
	}
	// Output:
	// 21:10:27.123456 TCP 10.0.0.2:40000 > 10.0.0.1:443 [S] seq=1000 win=64240 len=0 <mss 1460,sackOK,TS val 100 ecr 0,wscale 7>
	// 21:10:27.127206 TCP 10.0.0.2:40000 > 10.0.0.1:443 [P.] seq=1001 ack=5001 win=502 len=43 <TS val 102 ecr 200> | name=a.example decision=10.0.1.2:443
	// 21:10:27.138456 ERR TCP 10.0.0.2 > 10.0.0.1: tcp: header truncated: have 10 of 20 bytes
}
