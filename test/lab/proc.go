package lab

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// stopTimeout bounds how long Close waits for killed processes to be reaped.
const stopTimeout = 5 * time.Second

// proc is a process the lab owns and reaps.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when Wait returned
	err  error         // Wait's result, valid after done
}

// Start starts name inside n as a background process owned by the lab, in
// its own process group. Close kills the group and reaps it; so does ctx.
// The lab waits for the process: do not call cmd.Wait, call Lab.Wait.
// Its output is discarded; use StartCmd to keep it.
func (l *Lab) Start(n *NS, ctx context.Context, name string, args ...string) (*exec.Cmd, error) {
	cmd := n.Command(ctx, name, args...)
	if err := l.StartCmd(cmd); err != nil {
		return nil, err
	}
	return cmd, nil
}

// StartCmd starts cmd, usually made by NS.Command and given Stdout/Stderr by
// the caller, as a process owned by the lab, like Start. It sets
// SysProcAttr.Setpgid, makes cmd.Cancel kill the whole group and sets a
// WaitDelay so a grandchild holding an output pipe cannot stall Close.
func (l *Lab) StartCmd(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.Cancel = func() error { return killGroup(cmd) }
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = time.Second
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("lab: start %s: lab closed", cmd.Path)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("lab: start %v: %w", cmd.Args, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	l.procs = append(l.procs, p)
	return nil
}

// Wait waits for a process started by Start or StartCmd to exit and returns
// cmd.Wait's result. After it returns, cmd.ProcessState is set.
func (l *Lab) Wait(cmd *exec.Cmd) error {
	l.mu.Lock()
	var p *proc
	for _, q := range l.procs {
		if q.cmd == cmd {
			p = q
		}
	}
	l.mu.Unlock()
	if p == nil {
		return errors.New("lab: wait: process not started by this lab")
	}
	<-p.done
	return p.err
}

// killGroup sends SIGKILL to the process group cmd leads.
func killGroup(cmd *exec.Cmd) error {
	if cmd.Process == nil {
		return nil
	}
	err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// stopProcs kills every owned process group and waits until each is reaped.
// Called with l.mu held.
func (l *Lab) stopProcs() error {
	var errs []error
	for _, p := range l.procs {
		select {
		case <-p.done:
			continue
		default:
		}
		if err := killGroup(p.cmd); err != nil {
			errs = append(errs, fmt.Errorf("kill %v: %w", p.cmd.Args, err))
		}
	}
	deadline := time.NewTimer(stopTimeout)
	defer deadline.Stop()
	for _, p := range l.procs {
		select {
		case <-p.done:
		case <-deadline.C:
			return errors.Join(append(errs, context.DeadlineExceeded)...)
		}
	}
	return errors.Join(errs...)
}
