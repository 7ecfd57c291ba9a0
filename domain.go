package calipso

import (
	"slices"
	"strings"
	"time"
)

// User is a local account. Passwords are never stored: the user office checks them.
type User struct {
	ID        int64
	Username  string
	UUID      string
	IsAdmin   bool     // holds the admin role (the frontend's is_superuser)
	Roles     []string // roles granted to the account or mapped at login, sorted; see Policy
	Email     string
	UID, GID  *int   // the identity workloads run as, when the user has one
	Home      string // home directory to mount, when set
	Joined    time.Time
	LastLogin *time.Time
	// ExperimentsFetched is when the user office last answered for this user.
	ExperimentsFetched *time.Time
	// ExperimentsVersion changes whenever the user's experiments page would: pages
	// may be cached under it.
	ExperimentsVersion int64
}

// ExperimentsFetchedBefore reports whether the user's experiments are older than age.
func (u User) ExperimentsFetchedBefore(now time.Time, age time.Duration) bool {
	return u.ExperimentsFetched == nil || now.Sub(*u.ExperimentsFetched) >= age
}

// Experiment is a proposal and its sessions, as the user office (or the local
// database) describes it. experiments decodes the user office's wire form into it.
type Experiment struct {
	ProposalID string
	Subject    string
	Body       string
	BeamLine   string
	// UID and GID are the numeric identity the workloads run as; nil when unknown.
	UID, GID *int
	Sessions []Session
}

// Session is one beamtime of an experiment: an experiment session, what users
// launch resources for (not a login session).
type Session struct {
	SessionNumber string
	Subject       string
	Body          string
	// StartDate and EndDate are zero when not given.
	StartDate, EndDate time.Time
	// DataSetPath is the volume definition as the office sent it
	// (experiments.ParseVolumes reads it).
	DataSetPath string
}

// ResourceType names what runs an image: an engine, or a static link.
type ResourceType string

// The resource types, as images' resource_type spells them.
const (
	Docker         ResourceType = "docker"
	Kubernetes     ResourceType = "kubernetes"
	StaticLink     ResourceType = "static link"
	VirtualMachine ResourceType = "virtual machine"
)

// ResourceTypes are the accepted resource_type values.
var ResourceTypes = []ResourceType{Docker, Kubernetes, StaticLink, VirtualMachine}

// The protocols a workload is reached by: desktops through Guacamole, notebooks and
// links by their URL.
const (
	ProtocolVNC  = "vnc"
	ProtocolRDP  = "rdp"
	ProtocolHTTP = "http"
)

// Protocols are the accepted protocol values ("" for notebooks and links).
var Protocols = []string{"", ProtocolVNC, ProtocolRDP, ProtocolHTTP}

// IsDesktop says whether a protocol is reached through Guacamole.
func IsDesktop(protocol string) bool { return protocol == ProtocolVNC || protocol == ProtocolRDP }

// Image is something a user can launch: a Docker or Kubernetes image, or a static
// link. Memory and HDD are sizes as written ("3G"); quotas.ImageShare reads them.
type Image struct {
	PublicName   string
	Image        string // the image reference, or the link's URL
	Protocol     string
	CPU          float64
	Memory       string
	HDD          string
	ResourceType ResourceType
	LogRegex     string // a log line that means ready; its first group is the notebook token
	PidsLimit    int64  // processes and threads a workload may have; 0: the settings' workloads.pids_limit
}

// State is where a resource is in its life.
type State string

// The states of a resource.
const (
	Pending  State = "pending"  // quota reserved, engine being asked
	Running  State = "running"  // the workload is up
	Stopping State = "stopping" // being stopped
	Stopped  State = "stopped"  // stopped; the workload may still exist until removed
	Removed  State = "removed"  // gone from the engine
	Failed   State = "failed"   // launch or run failed; see Resource.Error
)

// LiveStates hold a share of the user's quota.
var LiveStates = []State{Pending, Running, Stopping}

// transitions lists, for each state, the states it may be reached from.
var transitions = map[State][]State{
	Running:  {Pending},
	Stopping: {Pending, Running},
	Stopped:  {Stopping},
	Removed:  {Stopped, Failed, Running, Pending, Stopping},
	Failed:   {Pending, Running, Stopping},
}

// Live reports whether the state holds quota.
func (s State) Live() bool { return slices.Contains(LiveStates, s) }

// Sources lists the states a resource may reach to from.
func Sources(to State) []State { return slices.Clone(transitions[to]) }

// CanMove reports whether from → to is allowed. The store checks it in the UPDATE
// itself (WHERE state IN the allowed sources), so two requests can't both move one
// resource.
func CanMove(from, to State) bool { return slices.Contains(transitions[to], from) }

// Resource is one launch of an image by a user, for an experiment session or as an
// own resource.
type Resource struct {
	ID       int64
	UserID   int64
	Username string
	// Experiment is "proposal~session", or an own resource's id (see SplitExperiment).
	Experiment        string
	SessionID         *int64
	PublicName        string
	Image             string
	ImageID           *int64 // the image record's id; nil once it is deleted
	Protocol          string
	ResourceType      ResourceType
	State             State
	CPU               float64
	MemoryBytes       int64
	DiskBytes         int64
	EngineName        string // the workload's name on its engine, from the record id
	EngineID          string
	HostPort          string // a port, or a URL for notebooks and links
	GuacamoleUsername string
	GuacamolePassword string
	VNCPassword       string
	Info              string // engine details, JSON
	Error             string // why it failed, as users may read it
	Created, Updated  time.Time
	// ExpiresAt is when its lifetime ends (nil: never); IdleSince, since when every
	// activity signal says idle (nil: active, or not watched); WarnedAt, when its user
	// was last warned of an action. Started and Ended are when it became running and
	// when it left the live states (accounting).
	ExpiresAt, IdleSince, WarnedAt *time.Time
	Started, Ended                 *time.Time
}

// SplitExperiment splits a resource's experiment reference as the original did: of
// "proposal~session" the session number is what the frontend calls
// calipso_experiment and the proposal its container_info; an own resource's id (no
// "~") is both.
func SplitExperiment(ref string) (session, proposal string) {
	if p, s, ok := strings.Cut(ref, "~"); ok {
		return s, p
	}
	return ref, ref
}

// Quota is what a user may use at once, or what is in use.
type Quota struct {
	MaxSimultaneous int     // resources running at once
	CPUs            float64 // cores
	MemoryBytes     int64
	DiskBytes       int64
}

// Exceeded names the first limit that used plus add would pass, or "" when it fits.
// The messages are the ones users read.
func (limit Quota) Exceeded(used, add Quota) string {
	switch {
	case used.MaxSimultaneous+add.MaxSimultaneous > limit.MaxSimultaneous:
		return "Max machines exceeded"
	case used.CPUs+add.CPUs > limit.CPUs+1e-9:
		return "Max CPU exceeded"
	case used.MemoryBytes+add.MemoryBytes > limit.MemoryBytes:
		return "Max memory exceeded"
	case used.DiskBytes+add.DiskBytes > limit.DiskBytes:
		return "Max hdd exceeded"
	}
	return ""
}

// The states of an extension request.
const (
	ExtensionPending = "pending" // waiting for an admin
	ExtensionGranted = "granted"
	ExtensionRefused = "refused"
)

// Extension is a request for more lifetime for a resource, with the reason its user
// gave: granted at once within the role's limit, otherwise decided by an admin.
type Extension struct {
	ID          int64
	ResourceID  int64
	RequestedBy string
	Duration    time.Duration // added to the resource's expiry when granted
	Reason      string
	State       string // ExtensionPending, ExtensionGranted or ExtensionRefused
	DecidedBy   string // "policy" when granted within the role's limit
	Created     time.Time
	Decided     *time.Time
}
