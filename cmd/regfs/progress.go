package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// progressMode is how a long command reports on stderr.
type progressMode int

const (
	progressQuiet progressMode = iota // nothing but errors
	progressLines                     // one plain line per finished step (logs, pipes)
	progressBar                       // a live bar redrawn in place (a terminal)
)

// progressModeFor picks the bar for a terminal, plain lines otherwise.
func progressModeFor(w io.Writer, quiet bool) progressMode {
	switch {
	case quiet:
		return progressQuiet
	case isTerminal(w):
		return progressBar
	}
	return progressLines
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// terminalWidth is w's width in columns, or 80 when unknown.
func terminalWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
			return int(ws.Col)
		}
	}
	return 80
}

const (
	progressTick   = 200 * time.Millisecond
	progressWindow = 5 * time.Second // the rate is measured over this much recent history
)

// progress shows one phase at a time (a label and done/total bytes) with
// its rate and ETA. Safe for concurrent use.
type progress struct {
	w     io.Writer
	mode  progressMode
	width int
	now   func() time.Time

	mu      sync.Mutex
	label   string
	done    int64
	total   int64
	poll    func() int64 // when set, the bar's done count comes from here
	start   time.Time
	samples []progressSample // oldest first, within progressWindow
	drawn   bool             // a bar is on the screen's last line

	stop    chan struct{}
	stopped chan struct{}
}

type progressSample struct {
	at   time.Time
	done int64
}

// newProgress starts reporting to w; in bar mode a goroutine redraws the
// bar until Close.
func newProgress(w io.Writer, mode progressMode) *progress {
	p := &progress{w: w, mode: mode, width: 80, now: time.Now, stop: make(chan struct{}), stopped: make(chan struct{})}
	if mode != progressBar {
		close(p.stopped)
		return p
	}
	p.width = terminalWidth(w)
	go func() {
		defer close(p.stopped)
		t := time.NewTicker(progressTick)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.mu.Lock()
				p.drawLocked()
				p.mu.Unlock()
			}
		}
	}()
	return p
}

// Phase starts a new phase: label, and total bytes to go (0 if unknown),
// counted by Add.
func (p *progress) Phase(label string, total int64) { p.PhaseFunc(label, total, nil) }

// PhaseFunc starts a phase whose done count is read from poll (counting
// from 0 at the start of the phase) instead of counted by Add.
func (p *progress) PhaseFunc(label string, total int64, poll func() int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.label, p.done, p.total = label, 0, total
	p.poll = nil
	if poll != nil {
		base := poll()
		p.poll = func() int64 { return poll() - base }
	}
	p.start = p.now()
	p.samples = p.samples[:0]
}

// Label changes the current phase's label only.
func (p *progress) Label(label string) {
	p.mu.Lock()
	p.label = label
	p.mu.Unlock()
}

// Add counts n more bytes done.
func (p *progress) Add(n int64) {
	p.mu.Lock()
	p.done += n
	p.mu.Unlock()
}

// Printf prints one line (a newline is added): above the bar in bar mode,
// as is in lines mode, not at all when quiet.
func (p *progress) Printf(format string, args ...any) {
	if p.mode == progressQuiet {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
	fmt.Fprintf(p.w, format+"\n", args...)
	p.drawLocked()
}

// Write passes log output through: above the bar in bar mode, so log lines
// and the bar do not garble each other.
func (p *progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
	n, err := p.w.Write(b)
	p.drawLocked()
	return n, err
}

// Close stops the bar and removes it from the screen. Idempotent.
func (p *progress) Close() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.stopped
	p.mu.Lock()
	p.clearLocked()
	p.mu.Unlock()
}

func (p *progress) clearLocked() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.drawn = false
	}
}

func (p *progress) drawLocked() {
	if p.mode != progressBar || p.label == "" {
		return
	}
	now := p.now()
	if p.poll != nil {
		p.done = p.poll()
	}
	p.sampleLocked(now)
	fmt.Fprint(p.w, "\r"+p.barLocked(now)+"\x1b[K")
	p.drawn = true
}

func (p *progress) sampleLocked(now time.Time) {
	p.samples = append(p.samples, progressSample{now, p.done})
	i := 0
	for i < len(p.samples)-1 && now.Sub(p.samples[i].at) > progressWindow {
		i++
	}
	p.samples = p.samples[i:]
}

// rateLocked is bytes per second over the recent window; since the phase
// began while the window is still short.
func (p *progress) rateLocked(now time.Time) float64 {
	from := progressSample{p.start, 0}
	if len(p.samples) > 0 && now.Sub(p.samples[0].at) >= time.Second {
		from = p.samples[0]
	}
	d := now.Sub(from.at).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(p.done-from.done) / d
}

// barLocked renders "label [=====>    ] 12.0 MiB / 40.0 MiB  3.1 MiB/s  ETA 9s",
// fitted to p.width.
func (p *progress) barLocked(now time.Time) string {
	rate := p.rateLocked(now)
	amount := humanBytes(p.done)
	if p.total > 0 {
		amount += " / " + humanBytes(p.total)
	}
	eta := "ETA --"
	switch {
	case p.total > 0 && p.done >= p.total:
		eta = "done"
	case p.total > 0 && rate > 0:
		eta = "ETA " + etaString(time.Duration(float64(p.total-p.done)/rate*float64(time.Second)))
	}
	tail := fmt.Sprintf(" %s  %s/s  %s", amount, humanBytes(int64(rate)), eta)
	room := p.width - 1 // the last column would wrap on some terminals
	if bw := min(room-len(p.label)-len(tail)-3, 40); p.total > 0 && bw >= 10 {
		filled := int(float64(bw) * float64(min(p.done, p.total)) / float64(p.total))
		bar := strings.Repeat("=", filled)
		if filled < bw {
			bar += ">" + strings.Repeat(" ", bw-filled-1)
		}
		return p.label + " [" + bar + "]" + tail
	}
	// No room for a bar: the numbers first, then what fits of the label.
	line := p.label + tail
	if len(line) > room {
		line = p.label[:max(room-len(tail), 0)] + tail
		if len(line) > room {
			line = strings.TrimSpace(tail)[:max(room, 0)]
		}
	}
	return line
}

// shortDuration is <1ms, 850ms, 4.2s, 42s, 3m05s or 1h02m.
func shortDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return "<1ms"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second)/time.Second))
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	}
	d = d.Round(time.Minute)
	return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
}

// etaString is a time left in whole seconds (less jitter than shortDuration).
func etaString(d time.Duration) string {
	switch {
	case d < time.Second:
		return "<1s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second)/time.Second))
	}
	return shortDuration(d)
}

// plural is "1 layer", "2 layers".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// rate is n bytes over d as "12.3 MiB/s".
func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return humanBytes(int64(float64(n)/d.Seconds())) + "/s"
}
