"""The export stage: the trained model as one ONNX file with its preprocessing inside (graph),
checked against torch on the test split (parity), timed (speed), optionally quantised to int8
(quantize), and described for the people who serve it (card)."""
