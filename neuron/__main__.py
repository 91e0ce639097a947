"""`python -m neuron`: run one neuron process (see neuron.service)."""
import sys

from neuron.service import main

sys.exit(main())
