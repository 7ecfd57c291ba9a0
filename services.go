package calipso

import (
	"context"
	"time"
)

// UserOffice is the facility's user office (experiments.Client; the reference
// implementation is experiments/useroffice). It checks passwords, maps Umbrella
// hashes to accounts, says who may use privileged resources, and lists a user's
// experiments. Its methods are safe for concurrent use and bounded by the client's
// timeout; their errors carry the codes of experiments' errors (ENOTFOUND for an
// unknown account, EUNAUTHORIZED for a wrong password, EUNAVAILABLE when it is down).
type UserOffice interface {
	Login(ctx context.Context, username, password string) error
	UmbrellaUser(ctx context.Context, eaaHash string) (username string, err error)
	IsAuthorized(ctx context.Context, login string) (bool, error)
	AllExperiments(ctx context.Context, login string) ([]Experiment, error)
}

// ExperimentSource lists a user's experiments: the user office (UserOffice), or an
// ICAT catalogue (experiments/icat). Safe for concurrent use; bounded by the
// client's timeout.
type ExperimentSource interface {
	AllExperiments(ctx context.Context, login string) ([]Experiment, error)
}

// ResourceService launches and ends resources (internal/launch). Launch reserves
// the user's quota before anything else, so concurrent launches never exceed it;
// Stop and Remove are idempotent (a stopped, failed or removed record is answered
// as it is). All three are safe for concurrent use.
type ResourceService interface {
	// Launch starts publicName for u: ref is "proposal~session", or an own resource's id.
	Launch(ctx context.Context, u User, ref, publicName string) (Resource, error)
	// Begin is Launch answered early: it reserves the quota and records the launch,
	// returns the pending record, and runs the rest in the background (bounded as
	// Launch is). Its progress is the record's events (Events).
	Begin(ctx context.Context, u User, ref, publicName string) (Resource, error)
	// Events lists resource id's progress after event seq (0: from the start).
	Events(ctx context.Context, id int64, after int) ([]Event, error)
	Stop(ctx context.Context, r Resource) (Resource, error)
	Remove(ctx context.Context, r Resource) (Resource, error)
}

// Event is one step of a resource's progress: a launch's reserved, creating,
// starting, waiting_token, then ready or failed (Message: what the user reads).
type Event struct {
	Seq     int // from 1, in order
	Stage   string
	Message string
	At      time.Time
}
