package launch

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/calipsoplus/calipso/provisioner"
)

// The events of a launch, in order: reserved, then the engine's stages (creating,
// starting, waiting_token: provisioner.Stage), then ready or failed.
const (
	EventReserved     = "reserved"
	EventCreating     = string(provisioner.StageCreating)
	EventStarting     = string(provisioner.StageStarting)
	EventWaitingToken = string(provisioner.StageWaitingToken)
	EventReady        = "ready"
	EventFailed       = "failed" // its message is the user's
)

// eventTimeout bounds the write of one event: progress is for users watching, and a
// launch does not wait long on it (nor fail for it).
const eventTimeout = 2 * time.Second

// progress records a launch's event, for every replica's event stream.
func (s *Service) progress(ctx context.Context, id int64, stage, message string) {
	ctx, cancel := bound(context.WithoutCancel(ctx), eventTimeout)
	defer cancel()
	if _, err := s.db.AddEvent(ctx, id, stage, message); err != nil {
		s.log.WarnContext(ctx, "launch progress not recorded", "resource", id, "stage", stage, "err", err)
	}
	switch stage {
	case EventReady, EventFailed:
		s.metrics.launches.WithLabelValues(stage).Inc()
	}
}

// metrics count what this process did: a launch by the process that ran it, a
// reconcile action by the process whose conditional write made it, so that the sum
// over replicas counts each once.
type metrics struct {
	launches   *prometheus.CounterVec
	reconciled *prometheus.CounterVec
	errors     prometheus.Counter
	leader     prometheus.Gauge
}

func newMetrics() *metrics {
	return &metrics{
		launches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "calipso_launches_total", Help: "Launches ended by this process, by result (ready, failed).",
		}, []string{"result"}),
		reconciled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "calipso_reconciled_total", Help: "Reconciler actions by this process, by kind.",
		}, []string{"action"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "calipso_reconcile_errors_total", Help: "Calls of reconcile passes that failed (retried by the next pass).",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "calipso_leader", Help: "1 while this process leads the background work.",
		}),
	}
}

func (m *metrics) count(rep Report) {
	for action, n := range map[string]int{
		"interrupted_launch": rep.InterruptedLaunches, "finished_stop": rep.FinishedStops, "vanished": rep.Vanished,
		"orphan_workload": rep.OrphanWorkloads, "orphan_desktop": rep.OrphanDesktops,
	} {
		if n > 0 {
			m.reconciled.WithLabelValues(action).Add(float64(n))
		}
	}
	m.errors.Add(float64(len(rep.Errors)))
}

// Collectors are the lifecycle's metrics, for the server's registry.
func (s *Service) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.metrics.launches, s.metrics.reconciled, s.metrics.errors, s.metrics.leader}
}
