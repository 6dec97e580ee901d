package access

import (
	"fmt"
	"slices"
	"strings"

	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
)

// Role is what a caller may do.
type Role string

// The roles.
const (
	// Admin may do everything, API keys included.
	Admin Role = "admin"
	// Operator changes policy, drains, the rebalancer, groups and tenants,
	// and reads.
	Operator Role = "operator"
	// Viewer reads.
	Viewer Role = "viewer"
	// Service uses MessagingService, optionally limited to tenants and
	// topics.
	Service Role = "service"
)

// Roles are every role, in the order docs list them.
var Roles = []Role{Admin, Operator, Viewer, Service}

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	r := Role(strings.TrimSpace(s))
	if !slices.Contains(Roles, r) {
		return "", fmt.Errorf("access: role %q: want one of admin, operator, viewer, service", s)
	}
	return r, nil
}

// Rule says who may call one RPC.
type Rule struct {
	// Roles may call it; admin always may.
	Roles []Role
	// Change marks an RPC that changes state: its calls are audited.
	Change bool
}

// Groups of roles the table uses.
var (
	reads   = []Role{Operator, Viewer}
	changes = []Role{Operator}
	admins  = []Role{}
)

// Table maps each protected RPC's full method name to its rule. A method
// of a protected service that is not in the table is refused to everyone.
var Table = map[string]Rule{
	adminv1.AdminService_ListGroups_FullMethodName:         {Roles: reads},
	adminv1.AdminService_PutGroup_FullMethodName:           {Roles: changes, Change: true},
	adminv1.AdminService_DeleteGroup_FullMethodName:        {Roles: changes, Change: true},
	adminv1.AdminService_ListExecutors_FullMethodName:      {Roles: reads},
	adminv1.AdminService_ListDevices_FullMethodName:        {Roles: reads},
	adminv1.AdminService_PutTenant_FullMethodName:          {Roles: changes, Change: true},
	adminv1.AdminService_ListTenants_FullMethodName:        {Roles: reads},
	adminv1.AdminService_DeleteTenant_FullMethodName:       {Roles: changes, Change: true},
	adminv1.AdminService_GetPolicy_FullMethodName:          {Roles: reads},
	adminv1.AdminService_ApplyPolicy_FullMethodName:        {Roles: changes, Change: true},
	adminv1.AdminService_DryRunPolicy_FullMethodName:       {Roles: reads},
	adminv1.AdminService_Explain_FullMethodName:            {Roles: reads},
	adminv1.AdminService_DrainGroup_FullMethodName:         {Roles: changes, Change: true},
	adminv1.AdminService_UndrainGroup_FullMethodName:       {Roles: changes, Change: true},
	adminv1.AdminService_DrainExecutor_FullMethodName:      {Roles: changes, Change: true},
	adminv1.AdminService_UndrainExecutor_FullMethodName:    {Roles: changes, Change: true},
	adminv1.AdminService_GetRebalanceStatus_FullMethodName: {Roles: reads},
	adminv1.AdminService_PauseRebalance_FullMethodName:     {Roles: changes, Change: true},
	adminv1.AdminService_ResumeRebalance_FullMethodName:    {Roles: changes, Change: true},
	adminv1.AdminService_CreateAPIKey_FullMethodName:       {Roles: admins, Change: true},
	adminv1.AdminService_ListAPIKeys_FullMethodName:        {Roles: admins},
	adminv1.AdminService_RevokeAPIKey_FullMethodName:       {Roles: admins, Change: true},
	adminv1.AdminService_ListAudit_FullMethodName:          {Roles: []Role{Operator}},
	// Device identity: who may vouch for devices is the admin's; stopping
	// a device or an enrollment is an operator's incident response.
	adminv1.AdminService_CreateEnrollment_FullMethodName:   {Roles: admins, Change: true},
	adminv1.AdminService_DeleteEnrollment_FullMethodName:   {Roles: admins, Change: true},
	adminv1.AdminService_EnableEnrollment_FullMethodName:   {Roles: admins, Change: true},
	adminv1.AdminService_DisableEnrollment_FullMethodName:  {Roles: changes, Change: true},
	adminv1.AdminService_ListEnrollments_FullMethodName:    {Roles: reads},
	adminv1.AdminService_RevokeDevice_FullMethodName:       {Roles: changes, Change: true},
	adminv1.AdminService_UnrevokeDevice_FullMethodName:     {Roles: changes, Change: true},
	adminv1.AdminService_ListRevokedDevices_FullMethodName: {Roles: reads},

	messagingv1.MessagingService_Send_FullMethodName:      {Roles: []Role{Service}},
	messagingv1.MessagingService_Call_FullMethodName:      {Roles: []Role{Service}},
	messagingv1.MessagingService_GetDevice_FullMethodName: {Roles: []Role{Service, Operator, Viewer}},
	messagingv1.MessagingService_Subscribe_FullMethodName: {Roles: []Role{Service}},
}

// Protected are the services whose every method needs an authenticated
// caller with a role from Table.
var Protected = []string{
	adminv1.AdminService_ServiceDesc.ServiceName,
	messagingv1.MessagingService_ServiceDesc.ServiceName,
}

// IsProtected reports whether fullMethod ("/pkg.Service/Method") belongs
// to a protected service.
func IsProtected(fullMethod string) bool {
	svc, _, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	return ok && slices.Contains(Protected, svc)
}

// Allowed returns the rule of fullMethod and nil when id may call it, or
// the role it needs.
func Allowed(id *Identity, fullMethod string) (Rule, error) {
	rule, ok := Table[fullMethod]
	if !ok {
		return Rule{}, fmt.Errorf("%w: %s is not open to any role", ErrDenied, fullMethod)
	}
	if id.Has(Admin) {
		return rule, nil
	}
	for _, r := range rule.Roles {
		if id.Has(r) {
			return rule, nil
		}
	}
	need := append([]Role{Admin}, rule.Roles...)
	names := make([]string, len(need))
	for i, r := range need {
		names[i] = string(r)
	}
	// The most specific role first: "needs role operator (or admin)".
	if len(names) > 1 {
		names = append(names[1:], names[0])
	}
	return rule, fmt.Errorf("%w: %s needs role %s", ErrDenied, fullMethod, strings.Join(names, " or "))
}
