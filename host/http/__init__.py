"""HTTP front ends: the function listener and the admin/actuator listener."""
