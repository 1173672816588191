package main

import (
	"bufio"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"falg/config"
	"falg/nfq"
	"falg/seqnat"
)

// metrics is falg's Prometheus registry. Flow outcomes and backend
// failures are counted as they happen (nfq.Observer); everything else is
// read from the engine's counters, the kernel's queue statistics and the
// conntrack table when Prometheus scrapes.
type metrics struct {
	reg         *prometheus.Registry
	flows       *prometheus.CounterVec
	setup       *prometheus.HistogramVec
	backendFail *prometheus.CounterVec
}

func newMetrics(c *config.Config, qs *nfq.Stats, es *nfq.EngineStats) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		flows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "falg_flows_total",
			Help: "Flows by outcome (spliced, rejected, malformed, no-data, failed), service, protocol and route.",
		}, []string{"service", "protocol", "route", "outcome"}),
		setup: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "falg_handover_seconds",
			Help:    "Time from a client's SYN to its flow's hand-over to the kernel.",
			Buckets: prometheus.ExponentialBuckets(100e-6, 2, 14), // 100us .. 0.8s
		}, []string{"service"}),
		backendFail: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "falg_backend_failures_total",
			Help: "Backend connection attempts that were refused, timed out or could not be made.",
		}, []string{"service", "backend"}),
	}
	m.reg.MustRegister(m.flows, m.setup, m.backendFail, &scraped{c: c, qs: qs, es: es})
	return m
}

// Outcome implements nfq.Observer.
func (m *metrics) Outcome(service, protocol string, rt int, outcome string, setup time.Duration) {
	r := "none"
	switch {
	case rt >= 0:
		r = strconv.Itoa(rt)
	case outcome == "spliced" || outcome == "failed":
		r = "default"
	}
	m.flows.WithLabelValues(service, protocol, r, outcome).Inc()
	if outcome == "spliced" {
		m.setup.WithLabelValues(service).Observe(setup.Seconds())
	}
}

// BackendFailed implements nfq.Observer.
func (m *metrics) BackendFailed(service string, backend netip.AddrPort, _ error) {
	m.backendFail.WithLabelValues(service, backend.String()).Inc()
}

// scraped collects at scrape time.
type scraped struct {
	c  *config.Config
	qs *nfq.Stats
	es *nfq.EngineStats
}

var (
	descQueued   = prometheus.NewDesc("falg_queued_packets_total", "Packets the kernel queued to falg.", nil, nil)
	descVerdicts = prometheus.NewDesc("falg_verdicts_total", "Verdicts falg gave queued packets.", []string{"verdict"}, nil)
	descOverruns = prometheus.NewDesc("falg_queue_overruns_total", "Times the kernel reported lost queue messages (ENOBUFS).", nil, nil)
	descPending  = prometheus.NewDesc("falg_pending_flows", "Flows in setup: handshake answered, not yet handed over.", nil, nil)
	descKernel   = prometheus.NewDesc("falg_queue_kernel_dropped_total", "Packets the kernel dropped for a queue: queue full, or not delivered to falg (/proc/net/netfilter/nfnetlink_queue).", []string{"queue", "reason"}, nil)
	descSpliced  = prometheus.NewDesc("falg_spliced_flows", "Conntrack entries carrying falg's flow mark: spliced flows the kernel forwards now.", nil, nil)
	descEvents   = prometheus.NewDesc("falg_packets_total", "Queued packets by what falg made of them.", []string{"kind"}, nil)
)

func (s *scraped) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueued, descVerdicts, descOverruns, descPending, descKernel, descSpliced, descEvents} {
		ch <- d
	}
}

func (s *scraped) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(descQueued, s.qs.Queued.Load())
	counter(descVerdicts, s.qs.Accepted.Load(), "accept")
	counter(descVerdicts, s.qs.Dropped.Load(), "drop")
	counter(descOverruns, s.qs.Overruns.Load())
	counter(descEvents, s.es.Unknown.Load(), "unknown")
	counter(descEvents, s.es.Late.Load(), "late")
	counter(descEvents, s.es.Undecodable.Load(), "undecodable")
	counter(descEvents, s.es.PendingFull.Load(), "pending_full")
	counter(descEvents, s.es.Limited.Load(), "limited")
	ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(s.es.Pending.Load()))
	for q, d := range queueDrops(s.c.Queue, s.c.Workers) {
		counter(descKernel, d[0], strconv.Itoa(q), "queue_full")
		counter(descKernel, d[1], strconv.Itoa(q), "not_delivered")
	}
	if ct, err := seqnat.Dial(); err == nil {
		if es, err := ct.List(s.c.FlowMark(), s.c.FlowMark()); err == nil {
			ch <- prometheus.MustNewConstMetric(descSpliced, prometheus.GaugeValue, float64(len(es)))
		}
		ct.Close()
	}
}

// queueDrops reads queue_dropped and user_dropped of falg's queues from
// /proc/net/netfilter/nfnetlink_queue.
func queueDrops(first uint16, n int) map[int][2]uint64 {
	out := map[int][2]uint64{}
	f, err := os.Open("/proc/net/netfilter/nfnetlink_queue")
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// queue portid queue_total copy_mode copy_range queue_dropped user_dropped id_sequence 1
		fs := strings.Fields(sc.Text())
		if len(fs) < 7 {
			continue
		}
		q, _ := strconv.Atoi(fs[0])
		if q < int(first) || q >= int(first)+n {
			continue
		}
		qd, _ := strconv.ParseUint(fs[5], 10, 64)
		ud, _ := strconv.ParseUint(fs[6], 10, 64)
		out[q] = [2]uint64{qd, ud}
	}
	return out
}
