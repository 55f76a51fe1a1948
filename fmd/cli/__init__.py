"""The command-line programs: fmd, fmadm, fmdump, fmstat, fminject."""
