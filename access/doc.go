// Package access decides who may call what on a control plane: it
// authenticates callers of AdminService and MessagingService (an API key
// presented as `authorization: Bearer <key>`, or a client certificate that
// chains to the operator CA), checks the caller's roles against one table
// of full method names, limits service callers to their tenants and topics,
// and records every change in the audit trail. ControlPlaneService (the
// devices' Assign), health and reflection are left open: devices prove who
// they are at Assign.
package access
