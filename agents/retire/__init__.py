"""The cpumem retire agent: offlines faulty CPUs and retires faulty memory pages."""
