"""faultsvc: persists the errors of managed database instances and tells their latest fault."""
